"""The sampler result type and time grids."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gl_jax.sde import GaussianDiffusion

__all__ = ["SampleResult", "start_point", "time_grid", "TIME_GRIDS"]

TIME_GRIDS = ("uniform", "quadratic", "logsnr", "karras")


class SampleResult(NamedTuple):
    """What every sampler returns.

    Attributes:
      x: the samples, `[B, ...]`.
      nfe: number of score/denoiser evaluations used (a scalar int array).
    """

    x: jax.Array
    nfe: jax.Array


def start_point(
    key: jax.Array, sde: GaussianDiffusion, shape: tuple[int, ...], x_init: jax.Array | None
) -> jax.Array:
    """The sampler's starting state: `x_init` when given (its shape checked), else a prior sample."""
    x = sde.prior_sample(key, tuple(shape)) if x_init is None else x_init
    if x.shape != tuple(shape):
        raise ValueError(f"x_init has shape {x.shape}, expected {tuple(shape)}.")
    return x


def time_grid(
    sde: GaussianDiffusion,
    steps: int,
    *,
    kind: str = "uniform",
    t_start: float | None = None,
    rho: float = 7.0,
) -> jax.Array:
    """Decreasing times `[steps + 1]` from `t_start` (default `sde.T`) to `sde.t_min`.

    Args:
      sde: the forward process, for its time range and log-SNR.
      steps: number of intervals.
      kind: `"uniform"` in t; `"quadratic"`, uniform in sqrt(t - t_min), finer near the data (Song et al.
        2021a, DDIM, appendix D.2); `"logsnr"`, uniform in log-SNR (Lu et al. 2022, DPM-Solver, sec. 3.3);
        `"karras"`, uniform in sigma^(1/rho) for the noise-to-signal ratio sigma = sigma(t) / alpha(t)
        (Karras et al. 2022, eq. 5).
      t_start: first time (SDEdit-style partial sampling starts below T).
      rho: the Karras grid's exponent (7 in EDM).

    Returns:
      `[steps + 1]` times, strictly decreasing, with exact end points.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    if kind not in TIME_GRIDS:
        raise ValueError(f"Unknown time grid {kind!r}; choose one of {TIME_GRIDS}.")
    t0 = sde.T if t_start is None else t_start
    u = jnp.linspace(0.0, 1.0, steps + 1)
    if kind == "uniform":
        ts = t0 + (sde.t_min - t0) * u
    elif kind == "quadratic":
        ts = sde.t_min + (t0 - sde.t_min) * (1.0 - u) ** 2
    else:
        ends = jnp.array([t0, sde.t_min], jnp.result_type(float))  # float64 under x64.
        lam_start, lam_end = sde.log_snr(ends)
        if kind == "logsnr":
            lam = lam_start + (lam_end - lam_start) * u
        else:
            s_max, s_min = jnp.exp(-0.5 * lam_start), jnp.exp(-0.5 * lam_end)
            sig = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
            lam = -2.0 * jnp.log(sig)
        ts = sde.t_from_log_snr(lam)
    # Exact end points (the inverse log-SNR is accurate only to float precision).
    return ts.at[0].set(t0).at[-1].set(sde.t_min)
