"""One-step and multistep consistency sampling (Song et al. 2023, "Consistency models", Algorithm 1).

A consistency model f(x, t) maps any point of a probability-flow trajectory to its end at t_min. Given as
a score, as every sampler takes it, its output is the denoised estimate of Tweedie's formula,
x_0 = (x + sigma^2 s) / alpha (`gl_jax.parametrization.denoised`), which is f(x, t) itself for a score
defined as s = (alpha f - x) / sigma^2 (`gl_jax.families.consistency` defines it so).

One step: x_0 = f(x_T, T) with x_T from the prior. Multistep: after each step the estimate is noised
again to the next time of the grid, x = alpha(s) x_0 + sqrt(sigma(s)^2 - (alpha(s) sigma_min)^2) z, where
sigma_min = sigma(t_min) / alpha(t_min) is the noise the boundary condition leaves in x_0 (the paper's
sqrt(tau^2 - eps^2) on the VE process), and f is applied again: `steps` network evaluations in all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gl_jax.parametrization import denoised
from gl_jax.samplers.base import SampleResult, ScoreFn, start
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = ["consistency_sampler"]


def consistency_sampler(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int = 1,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "karras",
    rho: float = 7.0,
) -> SampleResult:
    """Consistency sampling: f at the grid's first `steps` times, noising the estimate again in between.

    Args:
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`). The model is evaluated at the grid's times t_0 = T > t_1 > ... >
        t_{steps-1}; the last grid point (t_min) is not evaluated. For two steps, an array grid
        `[T, t_mid, t_min]` sets the intermediate time (iCT's CIFAR-10 two-step uses sigma = 0.821).

    Returns:
      `SampleResult(x_0, nfe)`, nfe = steps.
    """
    key_init, key_loop = jax.random.split(key)
    x, ts = start(key_init, sde, shape, steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)
    t_min = jnp.full((1,), sde.t_min)
    sigma_min = (sde.sigma(t_min) / sde.alpha(t_min))[0]  # The boundary's own noise level.

    def evaluate(x, t):
        tb = jnp.full((x.shape[0],), t)
        a_t, s_t = broadcast_to_data(sde.alpha(tb), x), broadcast_to_data(sde.sigma(tb), x)
        return denoised(score_fn(x, tb), x, a_t, s_t)

    def step(x, i):
        x0 = evaluate(x, ts[i])
        s = jnp.full((1,), ts[i + 1])
        a_s, s_s = sde.alpha(s)[0], sde.sigma(s)[0]
        std = jnp.sqrt(jnp.maximum(s_s**2 - (a_s * sigma_min) ** 2, 0.0))
        return a_s * x0 + std * jax.random.normal(jax.random.fold_in(key_loop, i), x.shape), None

    x, _ = jax.lax.scan(step, x, jnp.arange(steps - 1))
    return SampleResult(evaluate(x, ts[steps - 1]), jnp.asarray(steps))
