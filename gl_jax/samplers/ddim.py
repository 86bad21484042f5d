"""DDIM (Song et al. 2021a, "Denoising Diffusion Implicit Models"), for any Gaussian diffusion."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gl_jax.samplers.base import SampleResult, start_point, time_grid
from gl_jax.samplers.pc import posterior_step
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = ["ddim"]


def ddim(
    key: jax.Array,
    score_fn: Callable[[jax.Array, jax.Array], jax.Array],
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int = 50,
    eta: float = 0.0,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str = "uniform",
) -> SampleResult:
    """DDIM: x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z with c = eta * posterior std (eq. 12).

    eta = 0 is the deterministic DDIM sampler (a first-order solver of the probability-flow ODE in
    log-SNR; it equals DPM-Solver-1), eta = 1 is DDPM's ancestral sampler.

    Args:
      key: PRNG key (start noise and, for eta > 0, the step noise).
      score_fn: `score_fn(x, t) -> score` with `x` `[B, ...]`, `t` `[B]`.
      sde: the forward process.
      shape: `[B, ...]` sample shape.
      steps: number of steps (= number of score evaluations).
      eta: stochasticity in [0, 1].
      x_init: start at `t_start` (default: a prior sample).
      t_start: first time (default `sde.T`).
      grid: time grid kind (see `time_grid`).

    Returns:
      `SampleResult(x, nfe)` at `sde.t_min`, nfe = steps.
    """
    key_init, key_loop = jax.random.split(key)
    x = start_point(key_init, sde, shape, x_init)
    ts = time_grid(sde, steps, kind=grid, t_start=t_start)

    def step(x, i):
        t, s = ts[i], ts[i + 1]
        tb = jnp.full((x.shape[0],), t)
        a_t, s_t = broadcast_to_data(sde.alpha(tb), x), broadcast_to_data(sde.sigma(tb), x)
        x0 = (x + s_t**2 * score_fn(x, tb)) / a_t  # Tweedie's formula.
        mean, std = posterior_step(x, x0, sde, t, s, eta=eta)
        return mean + std * jax.random.normal(jax.random.fold_in(key_loop, i), x.shape), None

    x, _ = jax.lax.scan(step, x, jnp.arange(steps))
    return SampleResult(x, jnp.asarray(steps))
