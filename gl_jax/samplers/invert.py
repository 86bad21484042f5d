"""Inversion: the probability-flow ODE run forward in time, from data to noise, and the sampler undoing it.

The probability-flow ODE dx/dt = f(t) x - 1/2 g(t)^2 s(x, t) (Song et al. 2021, eq. 13) is deterministic,
so it can be integrated either way: from the prior down to the data (sampling) or from the data up to the
prior (encoding). `invert` does the second with a fixed-step solver on the same `time_grid` a deterministic
sampler uses, and each method is paired with the sampler that is its reverse on that grid
(`sample_from_latent`):

- `"ddim"`: DDIM inversion, x_t = alpha_t x0_hat + sigma_t eps_hat with both predictions taken at
  (x_s, s); reversed by `ddim(eta=0)`; order 1, nfe N.
- `"euler"`: Euler's method on the ODE in t; reversed by `ode_sampler(method="euler")`; order 1, nfe N.
- `"heun"`: Heun's method (the explicit trapezoidal rule) on the ODE in t; reversed by
  `ode_sampler(method="heun")`; order 2, nfe 2N.
- `"edm"`: Heun's method on EDM's ODE in sigma = sigma(t) / alpha(t); reversed by `edm_sampler` with
  `steps + 1` levels and no churn; order 2, nfe 2N.

DDIM inversion is the Euler discretisation of the ODE in the variables (x / alpha, sigma / alpha) with the
noise prediction taken at the start of each step (Song et al. 2021a, "Denoising Diffusion Implicit
Models", sec. 4.3, eq. 14; Dhariwal & Nichol 2021, appendix F); the sampler takes it at the other end.
The latent is within O(1/N^p) of the exact flow's, p the order above. Inverting and sampling back on one
grid of N intervals returns x with an error O(1/N) for the first-order methods but O(1/N^3) for Heun's:
a one-step method of order p and its reverse leave (1 - (-1)^p) times the method's leading local error
per step, which cancels for even p (Hairer, Lubich & Wanner 2006, "Geometric Numerical Integration",
sec. II.3, on adjoint methods). "edm" follows Karras et al. 2022 (algorithm 1): Heun steps on the state
x / alpha(t), for which every Gaussian diffusion is x_0 + sigma n (their eq. 4 with s(t) = alpha(t)).
`edm_sampler` ends with one Euler step to sigma = 0, which returns the denoiser's output D(x; sigma_min) and
has no inverse, so `invert` starts at t_min (sigma_min) and the round trip returns D(x; t_min) rather than x
(by Tweedie's formula they differ by about sigma(t_min)^2 times the score).

Editing (SDEdit-style partial paths, counterfactuals: `gl_jax.samplers.edit`) and watermark detection
(`gl_jax.samplers.watermark`) build on these two functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gl_jax.parametrization import denoised
from gl_jax.samplers.base import SampleResult, ScoreFn, time_grid
from gl_jax.samplers.ddim import ddim
from gl_jax.samplers.edm import edm_sampler
from gl_jax.samplers.ode import ode_sampler, probability_flow_drift
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = ["INVERSION_METHODS", "InversionResult", "invert", "sample_from_latent", "with_labels"]

# Score evaluations per interval of each method.
INVERSION_METHODS = {"ddim": 1, "euler": 1, "heun": 2, "edm": 2}


class InversionResult(NamedTuple):
    """What `invert` returns.

    Attributes:
      z: the state at the inversion's last time (`sde.T`, or `t_end`), shaped like the data `[B, ...]`.
      nfe: number of score evaluations (a scalar int array).
    """

    z: jax.Array
    nfe: jax.Array


def with_labels(score_fn: Callable[..., jax.Array], labels: Any) -> ScoreFn:
    """`score_fn` when `labels` is None, else the class-conditional `score(x, t) = score_fn(x, t, labels)`.

    Args:
      score_fn: `score_fn(x, t)`, or `score_fn(x, t, labels)` of a class-conditional model (as
        `lambda x, t, y: family.score_fn(params, y)(x, t)`, or the `score_fn` `guided_score` takes).
      labels: `[B]` labels, or None.
    """
    if labels is None:
        return score_fn
    return lambda x, t: score_fn(x, t, labels)


def _check_method(method: str) -> None:
    if method not in INVERSION_METHODS:
        raise ValueError(f"Unknown inversion method {method!r}; choose one of {tuple(INVERSION_METHODS)}.")


def invert(
    score_fn: Callable[..., jax.Array],
    sde: GaussianDiffusion,
    x: jax.Array,
    *,
    steps: int = 50,
    method: str = "ddim",
    grid: str | jax.Array = "uniform",
    t_end: float | None = None,
    rho: float = 7.0,
    labels: Any = None,
) -> InversionResult:
    """Integrates the probability-flow ODE forward in time from data `x` at `sde.t_min` to `t_end`.

    Deterministic, a pure function of its arguments (one `lax.scan`; jit-able and vmap-able).

    Args:
      score_fn: `score_fn(x, t) -> score` with `x` `[B, ...]`, `t` `[B]`; with `labels`, a class-conditional
        `score_fn(x, t, labels)`.
      sde: the forward process.
      x: `[B, ...]` data, taken as the state at `sde.t_min`.
      steps: intervals of the grid (N); nfe = N for "ddim" and "euler", 2N for "heun" and "edm".
      method: "ddim", "euler", "heun" or "edm" (the module docstring's table: each is undone by
        `sample_from_latent` with the same `method`, `steps`, `grid` and `rho`).
      grid: a name in `gl_jax.samplers.TIME_GRIDS` or an array of `steps + 1` decreasing times: the grid
        the reverse sampler uses (`time_grid(sde, steps, grid=grid, t_start=t_end, rho=rho)`), run
        upwards.
      t_end: the last time (default `sde.T`); below T the result is a partly noised state, the start of an
        SDEdit-style partial path (pass it to `sample_from_latent` as `t_start`).
      rho: the "karras" grid's exponent.
      labels: `[B]` class labels of a class-conditional `score_fn`, or None.

    Returns:
      `InversionResult(z, nfe)`: the state at `t_end`, shaped like `x`.
    """
    _check_method(method)
    score = with_labels(score_fn, labels)
    ts = time_grid(sde, steps, grid=grid, t_start=t_end, rho=rho)[::-1]  # [N + 1], increasing.
    batch = x.shape[0]

    def coefficients(t):
        tb = jnp.full((batch,), t)  # [B]: the model takes per-example times.
        return tb, broadcast_to_data(sde.alpha(tb), x), broadcast_to_data(sde.sigma(tb), x)

    if method == "ddim":

        def step(x, i):
            s, t = ts[i], ts[i + 1]
            sb, a_s, s_s = coefficients(s)
            _, a_t, s_t = coefficients(t)
            x0 = denoised(score(x, sb), x, a_s, s_s)
            eps = (x - a_s * x0) / s_s
            return a_t * x0 + s_t * eps, None

    elif method in ("euler", "heun"):
        drift = probability_flow_drift(score, sde)

        def step(x, i):
            s, t = ts[i], ts[i + 1]
            h = t - s  # > 0: forward in time.
            k1 = drift(x, s)
            if method == "euler":
                return x + h * k1, None
            k2 = drift(x + h * k1, t)
            return x + 0.5 * h * (k1 + k2), None

    else:
        sigmas = sde.sigma(ts) / sde.alpha(ts)  # [N + 1], increasing noise-to-signal ratios.

        def slope(y, t, sigma):
            """dy/dsigma = (y - D(y; sigma)) / sigma for the scaled state y = x / alpha(t) (EDM, eq. 4)."""
            tb, a, s = coefficients(t)
            x_t = a * y
            return (y - denoised(score(x_t, tb), x_t, a, s)) / sigma

        def step(y, i):
            h = sigmas[i + 1] - sigmas[i]
            d = slope(y, ts[i], sigmas[i])
            d_next = slope(y + h * d, ts[i + 1], sigmas[i + 1])
            return y + 0.5 * h * (d + d_next), None

        x = x / coefficients(ts[0])[1]

    z, _ = jax.lax.scan(step, x, jnp.arange(steps))
    if method == "edm":
        z = z * coefficients(ts[-1])[1]
    return InversionResult(z, jnp.asarray(INVERSION_METHODS[method] * steps))


def sample_from_latent(
    score_fn: Callable[..., jax.Array],
    sde: GaussianDiffusion,
    z: jax.Array,
    *,
    steps: int = 50,
    method: str = "ddim",
    grid: str | jax.Array = "uniform",
    t_start: float | None = None,
    rho: float = 7.0,
    labels: Any = None,
) -> SampleResult:
    """Samples from the state `z` at `t_start` with the deterministic sampler reversing `invert`'s `method`.

    `sample_from_latent(score_fn, sde, invert(score_fn, sde, x, **options).z, **options)` returns x up to
    the solver's error (D(x; t_min) for "edm"; see the module docstring), and under other `labels` it
    re-generates x's latent as another class.

    Args:
      score_fn, sde, steps, method, grid, rho, labels: as in `invert`; `labels` may differ from those the
        latent was inverted under.
      z: `[B, ...]` the state at `t_start`.
      t_start: the time of `z` (default `sde.T`): `invert`'s `t_end`.

    Returns:
      `SampleResult(x, nfe)` at `sde.t_min` ("edm": the denoiser's output there): `ddim(eta=0)`,
      `ode_sampler` with "euler" or "heun", or `edm_sampler` with `steps + 1` levels (the same grid and the
      step to sigma = 0) and no churn.
    """
    _check_method(method)
    score = with_labels(score_fn, labels)
    options = dict(x_init=z, t_start=t_start, grid=grid, rho=rho)
    key = jax.random.key(0)  # Only DDIM splits a key; with eta = 0 it adds no noise.
    if method == "ddim":
        return ddim(key, score, sde, z.shape, steps=steps, eta=0.0, **options)
    if method == "edm":
        return edm_sampler(key, score, sde, z.shape, steps=steps + 1, **options)
    return ode_sampler(key, score, sde, z.shape, steps=steps, method=method, **options)
