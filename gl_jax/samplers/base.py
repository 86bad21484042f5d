"""The sampler result type and time grids."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gl_jax.sde import GaussianDiffusion

__all__ = ["SampleResult", "time_grid", "TIME_GRIDS"]

TIME_GRIDS = ("uniform", "quadratic")


class SampleResult(NamedTuple):
    """What every sampler returns.

    Attributes:
      x: the samples, `[B, ...]`.
      nfe: number of score/denoiser evaluations used (a scalar int array).
    """

    x: jax.Array
    nfe: jax.Array


def time_grid(
    sde: GaussianDiffusion, steps: int, *, kind: str = "uniform", t_start: float | None = None
) -> jax.Array:
    """Decreasing times `[steps + 1]` from `t_start` (default `sde.T`) to `sde.t_min`.

    Args:
      sde: the forward process, for its time range.
      steps: number of intervals.
      kind: `"uniform"` in t, or `"quadratic"` (uniform in sqrt(t - t_min), finer near the data; DDIM, Song et
        al. 2021a, appendix D.2).
      t_start: first time (SDEdit-style partial sampling starts below T).

    Returns:
      `[steps + 1]` times, strictly decreasing.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    t0 = sde.T if t_start is None else t_start
    u = jnp.linspace(0.0, 1.0, steps + 1)
    if kind == "uniform":
        return t0 + (sde.t_min - t0) * u
    if kind == "quadratic":
        return sde.t_min + (t0 - sde.t_min) * (1.0 - u) ** 2
    raise ValueError(f"Unknown time grid {kind!r}; choose one of {TIME_GRIDS}.")
