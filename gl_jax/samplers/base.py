"""What the samplers share: the result type, the starting point, the time grid and the solvers' helpers.

Every sampler is `sampler(key, score_fn, sde, shape, *, steps, <its own options>, x_init=None,
t_start=None, grid=..., rho=7.0) -> SampleResult(x, nfe)`, and these common arguments mean the same in
each:

- `key`: PRNG key: the starting noise when `x_init` is None, and any noise the sampler adds.
- `score_fn`: `score_fn(x, t) -> score` with `x` `[B, ...]`, `t` `[B]`.
- `sde`: the forward process (`gl_jax.sde`).
- `shape`: `[B, ...]`, the shape of the samples.
- `steps`: the number of intervals of the time grid (each sampler states its nfe per interval).
- `x_init`: the state at `t_start` (default: a prior sample), for reproducible comparisons, latent
  interpolation and SDEdit-style partial sampling.
- `t_start`: the first time (default `sde.T`).
- `grid`: a name in `TIME_GRIDS` or an array of `steps + 1` decreasing times; see `time_grid`.
- `rho`: the exponent of the "karras" grid (7 in EDM); unused by the other grids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gl_jax.parametrization import convert
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = [
    "SampleResult",
    "ScoreFn",
    "TIME_GRIDS",
    "start_point",
    "time_grid",
    "start",
    "check_order",
    "prediction_fn",
    "LogSNRGrid",
    "log_snr_grid",
    "t_at_half_log_snr",
    "solver_start",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

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
    grid: str | jax.Array = "uniform",
    t_start: float | None = None,
    rho: float = 7.0,
) -> jax.Array:
    """Decreasing times `[steps + 1]` from `t_start` (default `sde.T`) to `sde.t_min`.

    Args:
      sde: the forward process, for its time range and log-SNR.
      steps: number of intervals.
      grid: `"uniform"` in t; `"quadratic"`, uniform in sqrt(t - t_min), finer near the data (Song et al.
        2021a, DDIM, appendix D.2); `"logsnr"`, uniform in log-SNR (Lu et al. 2022, DPM-Solver, sec. 3.3);
        `"karras"`, uniform in sigma^(1/rho) for the noise-to-signal ratio sigma = sigma(t) / alpha(t)
        (Karras et al. 2022, eq. 5); or an array of `steps + 1` times, returned as given.
      t_start: first time (SDEdit-style partial sampling starts below T); not with an array `grid`.
      rho: the Karras grid's exponent (7 in EDM).

    Returns:
      `[steps + 1]` times, strictly decreasing, with exact end points.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    if not isinstance(grid, str):
        ts = jnp.asarray(grid)
        if ts.shape != (steps + 1,) or t_start is not None:
            raise ValueError(f"A grid array needs shape ({steps + 1},) and no t_start, got {ts.shape}.")
        return ts
    if grid == "fitted":
        raise ValueError(
            "grid='fitted' is fitted to a model by `--mode eval` (an eval setting's options); elsewhere pass "
            "the array of gl_jax.samplers.fit_time_steps or a named grid."
        )
    if grid not in TIME_GRIDS:
        raise ValueError(f"Unknown time grid {grid!r}; choose one of {TIME_GRIDS}.")
    t0 = sde.T if t_start is None else t_start
    u = jnp.linspace(0.0, 1.0, steps + 1)
    if grid == "uniform":
        ts = t0 + (sde.t_min - t0) * u
    elif grid == "quadratic":
        ts = sde.t_min + (t0 - sde.t_min) * (1.0 - u) ** 2
    else:
        ends = jnp.array([t0, sde.t_min], jnp.result_type(float))  # float64 under x64.
        lam_start, lam_end = sde.log_snr(ends)
        if grid == "logsnr":
            lam = lam_start + (lam_end - lam_start) * u
        else:
            s_max, s_min = jnp.exp(-0.5 * lam_start), jnp.exp(-0.5 * lam_end)
            sig = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
            lam = -2.0 * jnp.log(sig)
        ts = sde.t_from_log_snr(lam)
    # Exact end points (the inverse log-SNR is accurate only to float precision).
    return ts.at[0].set(t0).at[-1].set(sde.t_min)


def start(
    key: jax.Array,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int,
    x_init: jax.Array | None,
    t_start: float | None,
    grid: str | jax.Array,
    rho: float,
) -> tuple[jax.Array, jax.Array]:
    """The starting state (`start_point`) and the time grid (`time_grid`) `[steps + 1]` of a sampler."""
    ts = time_grid(sde, steps, grid=grid, t_start=t_start, rho=rho)
    return start_point(key, sde, shape, x_init), ts


def check_order(order: int, allowed: tuple[int, ...], name: str) -> None:
    """Raises `ValueError` unless a solver's `order` is one of `allowed`."""
    if order not in allowed:
        raise ValueError(f"{name} supports order in {allowed}, got {order!r}.")


def prediction_fn(score_fn: ScoreFn, sde: GaussianDiffusion, target: str) -> Callable:
    """`pred(x, t) -> eps_hat or x0_hat` (`target` "eps" or "x0") at a scalar time `t`, from the score."""

    def pred(x, t):
        t_b = jnp.full((x.shape[0],), t)  # [B]: the model takes per-example times.
        alpha, sigma = broadcast_to_data(sde.alpha(t_b), x), broadcast_to_data(sde.sigma(t_b), x)
        return convert(score_fn(x, t_b), source="score", target=target, x_t=x, alpha=alpha, sigma=sigma)

    return pred


class LogSNRGrid(NamedTuple):
    """A time grid with what the exponential integrators need at its points, each `[steps + 1]`.

    Attributes:
      t: the times.
      lam: the half log-SNR log(alpha / sigma) (the papers' lambda; `sde.log_snr` is twice it).
      alpha, sigma: the signal and noise scales.
    """

    t: jax.Array
    lam: jax.Array
    alpha: jax.Array
    sigma: jax.Array


def log_snr_grid(sde: GaussianDiffusion, ts: jax.Array) -> LogSNRGrid:
    """The `LogSNRGrid` of the times `ts`."""
    return LogSNRGrid(ts, 0.5 * sde.log_snr(ts), sde.alpha(ts), sde.sigma(ts))


def t_at_half_log_snr(sde: GaussianDiffusion, lam: jax.Array) -> jax.Array:
    """The time whose half log-SNR is `lam` (a scalar)."""
    return sde.t_from_log_snr(2.0 * lam[None])[0]


def solver_start(key, sde, shape, *, steps, x_init, t_start, grid, rho) -> tuple[jax.Array, LogSNRGrid]:
    """The starting point and the `LogSNRGrid` `[steps + 1]` of an exponential integrator."""
    x, ts = start(key, sde, shape, steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)
    # JAX's default float (float32 unless x64 is enabled), so the scan carry keeps one dtype.
    return x.astype(jnp.result_type(float)), log_snr_grid(sde, ts)
