"""Euler-Maruyama discretisation of the reverse-time SDE (Song et al. 2021, eq. 6):

dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dw_bar,    integrated from t = T down to t = t_min.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from gl_jax.samplers.base import SampleResult, start_point, time_grid
from gl_jax.samplers.pc import pc_loop
from gl_jax.sde import GaussianDiffusion

__all__ = ["euler_maruyama"]


def euler_maruyama(
    key: jax.Array,
    score_fn: Callable[[jax.Array, jax.Array], jax.Array],
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int = 1000,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str = "uniform",
    denoise_last: bool = True,
) -> SampleResult:
    """Samples by Euler-Maruyama on the reverse SDE.

    Args:
      key: PRNG key.
      score_fn: `score_fn(x, t) -> score` with `x` `[B, ...]`, `t` `[B]`.
      sde: the forward process.
      shape: `[B, ...]` shape of the samples.
      steps: number of steps (= number of score evaluations).
      x_init: starting point at `t_start` (default: a prior sample).
      t_start: starting time (default `sde.T`).
      grid: time grid kind, see `time_grid`.
      denoise_last: return the last step's mean, without its noise (score_sde's `noise_removal`).

    Returns:
      `SampleResult(x, nfe)`.
    """
    key_init, key_loop = jax.random.split(key)
    x = start_point(key_init, sde, shape, x_init)
    ts = time_grid(sde, steps, kind=grid, t_start=t_start)  # [steps + 1]
    # The predictor-corrector loop with the Euler-Maruyama predictor and no corrector is exactly this sampler.
    x, x_mean, nfe = pc_loop(key_loop, score_fn, sde, x, ts, predictor="euler_maruyama", corrector=None)
    return SampleResult(x_mean if denoise_last else x, nfe)
