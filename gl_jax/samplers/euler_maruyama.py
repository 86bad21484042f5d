"""Euler-Maruyama discretisation of the reverse-time SDE (Song et al. 2021, eq. 6):

dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dw_bar,    integrated from t = T down to t = t_min.
"""

from __future__ import annotations

import jax

from gl_jax.samplers.base import SampleResult, ScoreFn
from gl_jax.samplers.pc import pc_sampler
from gl_jax.sde import GaussianDiffusion

__all__ = ["euler_maruyama"]


def euler_maruyama(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int = 1000,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "uniform",
    rho: float = 7.0,
    denoise_last: bool = True,
) -> SampleResult:
    """Samples by Euler-Maruyama on the reverse SDE: the predictor-corrector sampler with the
    Euler-Maruyama predictor and no corrector.

    Args:
      denoise_last: return the last step's mean, without its noise (score_sde's `noise_removal`).
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`); one score evaluation per interval.

    Returns:
      `SampleResult(x, nfe)` with nfe = steps.
    """
    return pc_sampler(
        key,
        score_fn,
        sde,
        shape,
        steps=steps,
        predictor="euler_maruyama",
        corrector=None,
        denoise_last=denoise_last,
        x_init=x_init,
        t_start=t_start,
        grid=grid,
        rho=rho,
    )
