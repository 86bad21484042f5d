"""Deterministic sampling by the probability-flow ODE (Song et al. 2021, eq. 13):

dx/dt = f(t) x - 1/2 g(t)^2 s(x, t),    integrated from t = T down to t = t_min.

Its marginals equal those of the forward SDE, so with the exact score it maps the prior p_T to p_{t_min}.
Fixed-step Euler, Heun and classical Runge-Kutta run as a `jax.lax.scan` over a `time_grid`; the adaptive
Dormand-Prince 5(4) and Tsitouras 5(4) methods run through `diffrax.diffeqsolve` (Kidger 2021). Both are
one traced program, so the caller can `jax.jit` (or `jax.vmap`) the whole sampler.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from gl_jax.samplers.base import SampleResult, ScoreFn, start, start_point
from gl_jax.sde import GaussianDiffusion

__all__ = [
    "ode_sampler",
    "probability_flow_drift",
    "adaptive_nfe",
    "FIXED_STEP_METHODS",
    "ADAPTIVE_METHODS",
    "ODE_METHODS",
    "FIRST_STEP_FRACTION",
]

# Score evaluations per step of each fixed-step method.
FIXED_STEP_METHODS = {"euler": 1, "heun": 2, "rk4": 4}
ADAPTIVE_METHODS = ("dopri5", "tsit5")
ODE_METHODS = (*FIXED_STEP_METHODS, *ADAPTIVE_METHODS)

# Both adaptive methods have 7 stages whose last one is evaluated at the step's end point and reused as the
# next step's first ("first same as last", FSAL), so every attempted step -- accepted or rejected, since a
# rejected step retries from the same point -- costs 6 new evaluations, and the very first step 1 more for
# the vector field at t0. We pass the first step size explicitly (`FIRST_STEP_FRACTION` of the interval)
# so no evaluations go to choosing it (Hairer et al. 1993, sec. II.4, would spend 2) and the count does not
# depend on the diffrax version. The tests check this count against a callback counter.
_NEW_EVALS_PER_STEP = 6
_INITIAL_EVALS = 1
FIRST_STEP_FRACTION = 0.01


def adaptive_nfe(num_steps: jax.Array) -> jax.Array:
    """Vector-field evaluations of a `dopri5`/`tsit5` solve that attempted `num_steps` steps.

    nfe = 6 * num_steps + 1: 6 new stages per attempted step (7 stages, the last reused as the next step's
    first), plus the vector field at the starting point. `num_steps` is diffrax's `stats["num_steps"]`
    (accepted plus rejected steps). Valid for solves whose first step size is given (`dt0` not None), as
    here and in `gl_jax.likelihood`.
    """
    return _NEW_EVALS_PER_STEP * jnp.asarray(num_steps) + _INITIAL_EVALS


def probability_flow_drift(score_fn: ScoreFn, sde: GaussianDiffusion) -> ScoreFn:
    """The probability-flow velocity v(x, t) = f(t) x - 1/2 g(t)^2 s(x, t) (Song et al. 2021, eq. 13).

    Args:
      score_fn: `score_fn(x, t) -> score` with `x` `[B, ...]`, `t` `[B]`.
      sde: the forward process.

    Returns:
      `drift(x, t)` with `x` `[B, ...]` and `t` a scalar or `[B]`, returning an array shaped like `x`.
    """

    def drift(x: jax.Array, t: jax.Array) -> jax.Array:
        t_b = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])  # [B]
        return sde.reverse_drift(x, t_b, score_fn(x, t_b), probability_flow=True)

    return drift


def ode_sampler(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int = 100,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "uniform",
    rho: float = 7.0,
) -> SampleResult:
    """Samples by integrating the probability-flow ODE from `t_start` down to `sde.t_min`.

    Args:
      method: `"euler"` (order 1, nfe = steps), `"heun"` (explicit trapezoidal rule, order 2, a full Heun
        step every step, nfe = 2 * steps), `"rk4"` (classical Runge-Kutta, order 4, nfe = 4 * steps), or
        the adaptive `"dopri5"` (Dormand & Prince 1980) and `"tsit5"` (Tsitouras 2011) with a PID step-size
        controller; their nfe is `adaptive_nfe(stats["num_steps"]) = 6 * num_steps + 1`.
      rtol, atol: tolerances of the adaptive methods. diffrax's error norm is the RMS over the whole batch
        (as score_sde's scipy RK45 on the flattened batch), so the batch shares one step-size sequence.
      max_steps: cap on the adaptive methods' attempted steps (diffrax raises if it is reached).
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`); the ODE itself is deterministic. `steps`, `grid` and `rho` set the
        fixed-step methods' grid; the adaptive methods choose their own steps.

    Returns:
      `SampleResult(x, nfe)`: samples at `sde.t_min`, `[B, ...]`, and the number of score evaluations.
    """
    if method not in ODE_METHODS:
        raise ValueError(f"Unknown ODE method {method!r}; choose one of {ODE_METHODS}.")
    drift = probability_flow_drift(score_fn, sde)

    if method in ADAPTIVE_METHODS:
        x = start_point(key, sde, shape, x_init)
        t0 = sde.T if t_start is None else t_start
        solver = diffrax.Dopri5() if method == "dopri5" else diffrax.Tsit5()
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: drift(y, t)),
            solver,
            t0=t0,
            t1=sde.t_min,  # t1 < t0: diffrax integrates backwards in time.
            dt0=FIRST_STEP_FRACTION * (sde.t_min - t0),  # Negative; the controller adapts it at once.
            y0=x,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
        )
        return SampleResult(sol.ys[0], adaptive_nfe(sol.stats["num_steps"]))

    x, ts = start(key, sde, shape, steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)

    def step(x, i):
        t, t_next = ts[i], ts[i + 1]
        h = t_next - t  # < 0: we step backwards in time.
        k1 = drift(x, t)
        if method == "euler":
            return x + h * k1, None
        if method == "heun":
            k2 = drift(x + h * k1, t_next)
            return x + 0.5 * h * (k1 + k2), None
        t_mid = t + 0.5 * h
        k2 = drift(x + 0.5 * h * k1, t_mid)
        k3 = drift(x + 0.5 * h * k2, t_mid)
        k4 = drift(x + h * k3, t_next)
        return x + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4), None

    x, _ = jax.lax.scan(step, x, jnp.arange(steps))
    return SampleResult(x, jnp.asarray(FIXED_STEP_METHODS[method] * steps))
