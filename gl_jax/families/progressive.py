"""Progressive distillation as a family (Salimans & Ho 2022, "Progressive distillation for fast sampling of
diffusion models", ICLR, Algorithm 2).

The student learns to take in one deterministic DDIM step what the teacher takes in two; after a round the
student becomes the teacher and the next round halves the steps again: a teacher of N DDIM steps gives,
after k rounds, a student of N / 2^k steps. The rounds run inside one training run: the parameter tree is
`{"student", "teacher", "progress"}`, the optimizer (`gl_jax.families.students.student_optimizer`) copies
the student over the teacher every `steps_per_round` updates, and the loss reads the round from
`progress`. The first round's teacher is the loaded diffusion run; the student starts from its
parameters.

Time grid: the student's N DDIM steps are uniform in t on [t_min, T] (`ddim(..., grid="uniform")`), the
teacher's 2N steps on the grid that halves each of them, so the student's sampler is `ddim` with
`steps = teacher_steps / 2^rounds` and `grid="uniform"`.

Parametrisation: Salimans & Ho predict v (or x) because eps-prediction cannot take a step from pure noise;
`student.prediction` is the student's, and `teacher_prediction` the first teacher's (the same network
read another way, when the loaded run predicted something else). The loss is their "truncated SNR"
weighting, max(||x - x_hat||^2, ||eps - eps_hat||^2) = max(SNR, 1) ||x - x_hat||^2 (sec. 4).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from gl_jax.families.base import Family, Sampler
from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.families.students import student_optimizer
from gl_jax.losses.consistency import progressive_target
from gl_jax.parametrization import PREDICTIONS, convert
from gl_jax.samplers import SampleResult
from gl_jax.sde import broadcast_to_data

__all__ = ["ProgressiveDistillation", "ProgressiveOptions"]

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class ProgressiveOptions:
    """The rounds of progressive distillation.

    Attributes:
      teacher_steps: DDIM steps of the first teacher (a power of two times 2^rounds).
      rounds: how many times the steps are halved.
      steps_per_round: training updates per round (the run's num_steps is rounds x steps_per_round).
      teacher_prediction: what the first teacher's network predicts ("": the student's `prediction`).
    """

    teacher_steps: int = 8
    rounds: int = 1
    steps_per_round: int = 1000
    teacher_prediction: str = ""

    def __post_init__(self):
        if self.rounds < 1 or self.steps_per_round < 1:
            raise ValueError(
                f"rounds and steps_per_round must be >= 1, got {self.rounds}, {self.steps_per_round}."
            )
        if self.teacher_steps % 2**self.rounds:
            raise ValueError(
                f"teacher_steps={self.teacher_steps} must be divisible by 2^rounds = {2**self.rounds} (each "
                "round halves the steps)."
            )
        if self.teacher_prediction:
            PREDICTIONS.lookup(self.teacher_prediction, where="teacher_prediction")

    @property
    def student_steps(self) -> int:
        """DDIM steps of the last round's student."""
        return self.teacher_steps // 2**self.rounds


@dataclasses.dataclass(frozen=True)
class ProgressiveDistillation(Family):
    """Progressive distillation of a diffusion model into a few-step DDIM student.

    Attributes:
      student: the student as a diffusion family (network, process, prediction; sampler = `ddim` with the
        final round's steps on the uniform grid).
      options: see `ProgressiveOptions`.
      teacher_params: the first teacher's parameters (the student starts from them), None for a random
        teacher (smoke runs). Not compared or hashed.
    """

    takes_samplers: ClassVar[bool] = True

    student: ScoreDiffusion
    options: ProgressiveOptions = ProgressiveOptions()
    teacher_params: Any = dataclasses.field(default=None, compare=False, repr=False)

    def round(self, progress: jax.Array) -> jax.Array:
        """The round (0-based) at update `progress`."""
        o = self.options
        return jnp.minimum(jnp.asarray(progress, jnp.int32) // o.steps_per_round, o.rounds - 1)

    def _x0(self, params: Any, z: jax.Array, t: jax.Array, prediction: str) -> jax.Array:
        sde = self.student.sde
        alpha, sigma = broadcast_to_data(sde.alpha(t), z), broadcast_to_data(sde.sigma(t), z)
        pred = self.student.predict(params, z, t)
        return convert(pred, source=prediction, target="x0", x_t=z, alpha=alpha, sigma=sigma)

    def init(self, key: jax.Array) -> Any:
        if self.teacher_params is not None:
            student = jax.tree.map(jnp.asarray, self.teacher_params)
        else:
            student = self.student.init(key)
        return {
            "student": student,
            "teacher": jax.tree.map(jnp.copy, student),
            "progress": jnp.zeros((), jnp.float32),
        }

    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        """max(SNR, 1)-weighted squared error of the student's x_hat to the two-teacher-step target x~.

        Args:
          params: `{"student", "teacher", "progress"}`.
          batch: `{"x": [B, ...]}`.
          keys: `[B]` per-example keys.
        """
        x = batch["x"]
        sde = self.student.sde
        o = self.options
        rnd = self.round(sg(params["progress"]))
        steps = (o.teacher_steps // 2) // 2**rnd  # The student's N this round (traced).

        def draw(key):
            key_j, key_e = jax.random.split(key)
            return jax.random.randint(key_j, (), 0, steps), jax.random.normal(key_e, x.shape[1:], x.dtype)

        j, eps = jax.vmap(draw)(keys)  # [B], [B, ...]
        n = jnp.asarray(steps, jnp.float32)
        time = lambda u: sde.T + (sde.t_min - sde.T) * u  # The uniform grid of `time_grid`.
        t, t_mid, t_next = time(j / n), time((2 * j + 1) / (2 * n)), time((j + 1) / n)  # [B] each
        alphas = tuple(sde.alpha(s) for s in (t, t_mid, t_next))
        sigmas = tuple(sde.sigma(s) for s in (t, t_mid, t_next))
        z_t = broadcast_to_data(alphas[0], x) * x + broadcast_to_data(sigmas[0], x) * eps
        teacher = sg(params["teacher"])
        first = o.teacher_prediction or self.student.prediction

        def teacher_x0(z, s):
            if first == self.student.prediction:
                return self._x0(teacher, z, s, first)
            # Round 0 reads the loaded network's output as its own prediction; later rounds as the student's.
            a, b = (self._x0(teacher, z, s, p) for p in (first, self.student.prediction))
            return jnp.where(rnd == 0, a, b)

        target = sg(progressive_target(teacher_x0, z_t, alphas, sigmas, (t, t_mid)))
        x_hat = self._x0(params["student"], z_t, t, self.student.prediction)
        weight = jnp.maximum(jnp.exp(sde.log_snr(t)), 1.0)  # Truncated SNR weighting, [B].
        err = jnp.mean(jnp.square(x_hat - target).reshape(x.shape[0], -1), axis=-1)
        loss = jnp.mean(weight * err)
        return loss, {"loss": loss, "round": rnd.astype(jnp.float32), "student_steps": n}

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        return self.sample_counted(params, key, num).x

    def sample_counted(self, params: Any, key: jax.Array, num: int) -> SampleResult:
        """The student's samples with its sampler (DDIM with the last round's steps) and their NFE."""
        return self.student.sample_counted(params["student"], key, num)

    def with_sampler(self, sampler: Sampler, *, threshold: str) -> ProgressiveDistillation:
        return dataclasses.replace(self, student=self.student.with_sampler(sampler, threshold=threshold))

    def optimizer(self, base) -> optax.GradientTransformation:
        """The config's optimizer on the student; the teacher is replaced by it at the end of each round."""
        return student_optimizer(base(), teacher_every=self.options.steps_per_round)
