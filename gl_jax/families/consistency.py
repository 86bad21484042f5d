"""Consistency models as a family: consistency distillation (CD), consistency training (CT) and improved
consistency training (iCT) (Song et al. 2023, ICML; Song & Dhariwal 2024, ICLR).

The student is a diffusion network (`ScoreDiffusion`: network, process, parametrisation), read in EDM's
sigma space by `gl_jax.families.students.sigma_denoiser` and made a consistency function by the boundary
condition of `gl_jax.losses.consistency.consistency_function`, so f(x, sigma_min) = x exactly. Its
parameters are a group of the tree `{"student", "teacher" (CD), "target" (CD, CT), "progress"}`; the
optimizer (`student_optimizer`) moves the target by an EMA of the student, keeps the teacher fixed, and
counts updates for CT's and iCT's curricula. Sampling is `gl_jax.samplers.consistency_sampler` (or any
sampler) on EDM's process with sigma in [sigma_min, sigma_max], whose score is (f(x, sigma) - x) / sigma^2.

Defaults per method (Song et al. 2023, appendix C, CIFAR-10; Song & Dhariwal 2024, sec. 3):

- cd: N = 18 levels, target EMA mu = 0.95, squared L2 (LPIPS needs weights that cannot be fetched here).
- ct: N(k) from s0 = 2 to s1 = 150, mu(k) = exp(s0 log mu0 / N(k)) with mu0 = 0.9, squared L2.
- ict: N(k) = min(s0 2^floor(k / K'), s1) + 1 with s0 = 10, s1 = 1280, no EMA target, pseudo-Huber
  (c = 0.00054 sqrt(d)), log-normal level sampling (P_mean = -1.1, P_std = 2.0), lambda = 1 /
  (sigma_{n+1} - sigma_n).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from gl_jax.families.base import Family, Sampler
from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.families.students import sigma_denoiser, student_optimizer
from gl_jax.losses.consistency import (
    consistency_function,
    consistency_loss,
    ct_num_levels,
    ct_target_decay,
    ict_num_levels,
)
from gl_jax.parametrization import PREDICTIONS
from gl_jax.samplers import SampleResult
from gl_jax.samplers.consistency import consistency_sampler
from gl_jax.samplers.thresholding import thresholded_score
from gl_jax.sde import EDMSDE, broadcast_to_data

__all__ = ["ConsistencyModel", "ConsistencyOptions", "CONSISTENCY_METHODS"]

CONSISTENCY_METHODS = ("cd", "ct", "ict")
_DEFAULT_LEVELS = {"ct": (2, 150), "ict": (10, 1280)}

sg = jax.lax.stop_gradient

# One-step consistency sampling (one object, so two default families compare equal).
ONE_STEP = functools.partial(consistency_sampler, steps=1)


@dataclasses.dataclass(frozen=True)
class ConsistencyOptions:
    """How a consistency model is trained.

    Attributes:
      method: "cd" (distillation from a teacher), "ct" or "ict" (training from data alone).
      sigma_min, sigma_max, rho: the noise levels' range and EDM's exponent (0.002, 80, 7).
      sigma_data: the data's standard deviation in the boundary condition (0.5).
      num_levels: CD's N (18).
      target_decay: CD's EMA decay mu of the target (0.95); CT's mu0 (0.9); unused by iCT.
      s0, s1: the curriculum's first and last N (0: the method's, CT 2 and 150, iCT 10 and 1280).
      total_steps: K, the steps the curriculum spans (the run's `train.num_steps`).
      distance: "l2" or "pseudo_huber" ("": l2 for cd and ct, pseudo_huber for ict).
      huber_c: pseudo-Huber's c (0: 0.00054 sqrt(d)).
      p_mean, p_std: iCT's log-normal level sampling.
      teacher_prediction: what CD's teacher network predicts ("": the student's `prediction`). A student
        that reads the teacher's eps network as v (as progressive distillation does): at sigma = 80 an
        eps-parametrised denoiser multiplies the network's error by sigma / alpha, a v-parametrised one
        does not, and at low noise v ~ eps, so the teacher's weights still start the student near it.
    """

    method: str = "cd"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    sigma_data: float = 0.5
    num_levels: int = 18
    target_decay: float = 0.95
    s0: int = 0
    s1: int = 0
    total_steps: int = 1
    distance: str = ""
    huber_c: float = 0.0
    p_mean: float = -1.1
    p_std: float = 2.0
    teacher_prediction: str = ""

    def __post_init__(self):
        if self.teacher_prediction:
            PREDICTIONS.lookup(self.teacher_prediction, where="teacher_prediction")
        if self.method not in CONSISTENCY_METHODS:
            raise ValueError(f"Unknown method {self.method!r}; choose one of {CONSISTENCY_METHODS}.")
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"Need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}.")
        if self.distance not in ("", "l2", "pseudo_huber"):
            raise ValueError(f"Unknown distance {self.distance!r}; choose 'l2' or 'pseudo_huber'.")
        if self.method == "cd" and self.num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {self.num_levels}.")
        if self.method != "ict" and not 0.0 <= self.target_decay < 1.0:
            raise ValueError(f"target_decay must be in [0, 1), got {self.target_decay}.")

    @property
    def levels(self) -> tuple[int, int]:
        """(s0, s1) of the curriculum."""
        d0, d1 = _DEFAULT_LEVELS.get(self.method, (0, 0))
        return self.s0 or d0, self.s1 or d1

    @property
    def metric(self) -> str:
        return self.distance or ("pseudo_huber" if self.method == "ict" else "l2")


@dataclasses.dataclass(frozen=True)
class ConsistencyModel(Family):
    """A consistency model f(x, sigma) trained by CD, CT or iCT.

    Attributes:
      student: the student network as a diffusion family (its network, process and parametrisation; for
        CD the teacher's, whose parameters it starts from).
      options: see `ConsistencyOptions`.
      teacher_params: CD's teacher parameters (arrays shaped like the student's), None for a random teacher
        (smoke runs) or for CT/iCT. Not compared or hashed.
      sampler: the sampler in EDM's sigma space, `sampler(key, score_fn, sde, shape)` (default one-step
        `consistency_sampler`).
      threshold: thresholding of the denoised estimate while sampling ("none" for non-image data).
    """

    takes_samplers: ClassVar[bool] = True

    student: ScoreDiffusion
    options: ConsistencyOptions = ConsistencyOptions()
    teacher_params: Any = dataclasses.field(default=None, compare=False, repr=False)
    sampler: Sampler = dataclasses.field(default_factory=lambda: ONE_STEP)
    threshold: str = "none"

    @property
    def sde(self) -> EDMSDE:
        """The sigma-space process the student samples on."""
        return EDMSDE(sigma_min=self.options.sigma_min, sigma_max=self.options.sigma_max)

    def consistency_fn(self, params: Any) -> Any:
        """f(x, sigma) with the student group `params` (x `[B, ...]`, sigma `[B]`)."""
        return consistency_function(
            sigma_denoiser(self.student, params),
            sigma_min=self.options.sigma_min,
            sigma_data=self.options.sigma_data,
        )

    def num_levels(self, progress: jax.Array) -> jax.Array:
        """N at update `progress`: fixed for CD, the curriculum's for CT and iCT."""
        o = self.options
        s0, s1 = o.levels
        if o.method == "cd":
            return jnp.asarray(o.num_levels, jnp.int32)
        if o.method == "ct":
            return ct_num_levels(progress, total_steps=o.total_steps, s0=s0, s1=s1)
        return ict_num_levels(progress, total_steps=o.total_steps, s0=s0, s1=s1)

    def target_decay(self, progress: jax.Array) -> jax.Array:
        """The target's EMA decay mu at update `progress`."""
        o = self.options
        if o.method == "ct":
            return ct_target_decay(self.num_levels(progress), mu0=o.target_decay, s0=o.levels[0])
        return jnp.asarray(o.target_decay, jnp.float32)

    # --- The family interface. ---

    def init(self, key: jax.Array) -> Any:
        if self.teacher_params is not None:
            student = jax.tree.map(jnp.asarray, self.teacher_params)  # CD starts from the teacher.
        else:
            student = self.student.init(key)
        params = {"student": student, "progress": jnp.zeros((), jnp.float32)}
        if self.options.method == "cd":
            params["teacher"] = jax.tree.map(jnp.copy, student)
        if self.options.method != "ict":
            params["target"] = jax.tree.map(jnp.copy, student)
        return params

    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        """The consistency loss of `gl_jax.losses.consistency.consistency_loss` for the method.

        Args:
          params: `{"student", "teacher"?, "target"?, "progress"}`.
          batch: `{"x": [B, ...]}`.
          keys: `[B]` per-example keys.
        """
        o = self.options
        x = batch["x"]
        if tuple(x.shape[1:]) != self.student.data_shape:
            raise ValueError(
                f"Batch examples have shape {tuple(x.shape[1:])}, the model was built for "
                f"{self.student.data_shape}."
            )
        progress = sg(params["progress"])
        num = self.num_levels(progress)
        online = self.consistency_fn(params["student"])
        target = online if o.method == "ict" else self.consistency_fn(sg(params["target"]))
        teacher = None
        if o.method == "cd":
            reader = dataclasses.replace(
                self.student, prediction=o.teacher_prediction or self.student.prediction
            )
            teacher = sigma_denoiser(reader, sg(params["teacher"]))
        ict = o.method == "ict"
        loss, metrics = consistency_loss(
            keys,
            online,
            target,
            x,
            num_levels=num,
            sigma_min=o.sigma_min,
            sigma_max=o.sigma_max,
            rho=o.rho,
            teacher=teacher,
            distance=o.metric,
            huber_c=o.huber_c or None,
            level_sampling="lognormal" if ict else "uniform",
            max_levels=o.levels[1] + 1 if ict else 0,
            p_mean=o.p_mean,
            p_std=o.p_std,
            weighting="ict" if ict else "uniform",
        )
        if o.method != "ict":
            metrics = {**metrics, "target_decay": self.target_decay(progress)}
        return loss, metrics

    def score_fn(self, params: Any):
        """The student's score in sigma space, s(x, sigma) = (f(x, sigma) - x) / sigma^2, so a sampler's
        denoised estimate is f itself (`params`: the whole tree)."""
        f = self.consistency_fn(params["student"])

        def score(x: jax.Array, sigma: jax.Array) -> jax.Array:
            return (f(x, sigma) - x) / broadcast_to_data(sigma, x) ** 2

        return score

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        return self.sample_counted(params, key, num).x

    def sample_counted(self, params: Any, key: jax.Array, num: int) -> SampleResult:
        """`num` samples with the family's sampler (one step by default) and its NFE."""
        score = thresholded_score(self.score_fn(params), self.sde, method=self.threshold)
        return self.sampler(key, score, self.sde, (num, *self.student.data_shape))

    def with_sampler(self, sampler: Sampler, *, threshold: str) -> ConsistencyModel:
        return dataclasses.replace(self, sampler=sampler, threshold=threshold)

    def optimizer(self, base) -> optax.GradientTransformation:
        """The config's optimizer on the student; the target follows by EMA; the teacher stays."""
        return student_optimizer(base(), target_decay=self.target_decay)
