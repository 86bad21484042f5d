"""What the few-step families share: a diffusion network as a denoiser in EDM's sigma space, and the
optimizer of a parameter tree that holds a student with its teacher and target copies.

A distilled or consistency-trained student is a diffusion network (a `ScoreDiffusion` family: its network,
process and parametrisation, e.g. the teacher's, whose parameters it starts from). The parameter tree is

  {"student": ..., "teacher": ... (distillation), "target": ... (an EMA copy), "progress": scalar}

`teacher` is frozen (as the latent family's VAE) except where progressive distillation's rounds replace it
by the student; `target` follows the student by an EMA; `progress` counts the updates, so a loss whose
schedule depends on the training step (CT's and iCT's discretisation curricula, progressive distillation's
rounds) reads it from the parameters it is given. All of it is done by `student_optimizer`, an optax
transformation, so the families train on the one `make_train_step` with no step code of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.parametrization import convert
from gl_jax.sde import broadcast_to_data

__all__ = ["sigma_denoiser", "student_optimizer", "StudentOptimizerState"]


def sigma_denoiser(family: ScoreDiffusion, params: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """D(x, sigma) of a diffusion network, in sigma space: x = x_0 + sigma n.

    A point x_t = alpha(t) x_0 + sigma(t) n of the network's own process is alpha(t) x with sigma =
    sigma(t) / alpha(t) (Karras et al. 2022, eq. 4 / sec. 4), so D(x, sigma) is the network's x_0
    prediction at x_t = alpha(t) x, t = t(sigma) (the process's inverse log-SNR).

    Args:
      family: the network's diffusion family (process, parametrisation, noise conditioning).
      params: its parameters.

    Returns:
      `D(x [B, ...], sigma [B]) -> [B, ...]`.
    """

    def denoiser(x: jax.Array, sigma: jax.Array) -> jax.Array:
        sde = family.sde
        t = sde.t_from_log_snr(-2.0 * jnp.log(sigma))  # [B]
        alpha, std = broadcast_to_data(sde.alpha(t), x), broadcast_to_data(sde.sigma(t), x)
        x_t = alpha * x
        pred = family.predict(params, x_t, t)
        return convert(pred, source=family.prediction, target="x0", x_t=x_t, alpha=alpha, sigma=std)

    return denoiser


class StudentOptimizerState(NamedTuple):
    """The student's optimizer state (the other groups have none)."""

    inner: Any


def student_optimizer(
    inner: optax.GradientTransformation,
    *,
    target_decay: Callable[[jax.Array], jax.Array] | None = None,
    teacher_every: int = 0,
) -> optax.GradientTransformation:
    """The optimizer of `{"student", "teacher"?, "target"?, "progress"}`.

    - student: `inner` (the config's optimizer) on its gradients;
    - target: theta- <- mu theta- + (1 - mu) theta with the updated student theta (Song et al. 2023,
      Algorithm 2), mu = `target_decay(progress)`;
    - teacher: unchanged (a zero update), or, with `teacher_every`, replaced by the updated student after
      every `teacher_every` updates (progressive distillation's rounds, Salimans & Ho 2022, Algorithm 2);
    - progress: + 1.

    Args:
      inner: the student's optimizer.
      target_decay: mu as a function of the progress count (needed when the tree has a target).
      teacher_every: the round length of progressive distillation (0: the teacher stays fixed).

    Returns:
      An `optax.GradientTransformation` whose `update` needs `params`.
    """

    def init(params: Any) -> StudentOptimizerState:
        return StudentOptimizerState(inner.init(params["student"]))

    def update(updates: Any, state: StudentOptimizerState, params: Any = None):
        if params is None:
            raise ValueError("student_optimizer needs the parameters: call update(g, s, params).")
        step, inner_state = inner.update(updates["student"], state.inner, params["student"])
        student = optax.apply_updates(params["student"], step)
        progress = params["progress"]
        out = {"student": step, "progress": jnp.ones_like(progress)}
        if "target" in params:
            if target_decay is None:
                raise ValueError("The parameters have a target group: give student_optimizer a target_decay.")
            mu = target_decay(progress)
            out["target"] = jax.tree.map(
                lambda new, old: ((1.0 - mu) * (new - old)).astype(old.dtype), student, params["target"]
            )
        if "teacher" in params:
            if teacher_every:
                replace = (progress + 1) % teacher_every == 0
                out["teacher"] = jax.tree.map(
                    lambda new, old: jnp.where(replace, new - old, jnp.zeros_like(old)),
                    student,
                    params["teacher"],
                )
            else:
                out["teacher"] = jax.tree.map(jnp.zeros_like, params["teacher"])
        return out, StudentOptimizerState(inner_state)

    return optax.GradientTransformation(init, update)
