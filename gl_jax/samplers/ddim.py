"""DDIM (Song et al. 2021a, "Denoising Diffusion Implicit Models"), for any Gaussian diffusion."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gl_jax.parametrization import denoised
from gl_jax.samplers.base import SampleResult, ScoreFn, start
from gl_jax.samplers.pc import posterior_step
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = ["ddim"]


def ddim(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int = 50,
    eta: float = 0.0,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "uniform",
    rho: float = 7.0,
) -> SampleResult:
    """DDIM: x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z with c = eta * posterior std (eq. 12).

    eta = 0 is the deterministic DDIM sampler (a first-order solver of the probability-flow ODE in
    log-SNR; it equals DPM-Solver-1), eta = 1 is DDPM's ancestral sampler.

    Args:
      eta: stochasticity in [0, 1].
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`); one score evaluation per interval.

    Returns:
      `SampleResult(x, nfe)` at `sde.t_min`, nfe = steps.
    """
    key_init, key_loop = jax.random.split(key)
    x, ts = start(key_init, sde, shape, steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)

    def step(x, i):
        t, s = ts[i], ts[i + 1]
        tb = jnp.full((x.shape[0],), t)
        a_t, s_t = broadcast_to_data(sde.alpha(tb), x), broadcast_to_data(sde.sigma(tb), x)
        x0 = denoised(score_fn(x, tb), x, a_t, s_t)
        mean, std = posterior_step(x, x0, sde, t, s, eta=eta)
        return mean + std * jax.random.normal(jax.random.fold_in(key_loop, i), x.shape), None

    x, _ = jax.lax.scan(step, x, jnp.arange(steps))
    return SampleResult(x, jnp.asarray(steps))
