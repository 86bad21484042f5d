"""DPM-Solver and DPM-Solver++: exponential integrators for the probability-flow ODE.

Every process in `gl_jax.sde` has x_t = alpha_t x_0 + sigma_t eps. In the half log-SNR
lambda_t = log(alpha_t / sigma_t) (the papers' lambda; `sde.log_snr` is twice it) the probability-flow ODE
has the exact solutions (Lu et al. 2022a, "DPM-Solver", eq. 3.4, and its data-prediction form in
Lu et al. 2022b, "DPM-Solver++", sec. 4)

  x_t = alpha_t / alpha_s x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-lambda} eps_hat(x_lambda) dlambda
  x_t = sigma_t / sigma_s x_s + sigma_t int_{lambda_s}^{lambda_t} e^{lambda} x0_hat(x_lambda) dlambda

in the noise prediction eps_hat and the data prediction x0_hat. The linear part is integrated exactly and
only the prediction is Taylor-expanded in lambda, so the solvers are process-agnostic: they only need
alpha, sigma, lambda and its inverse. Order 1 is DDIM (Song et al. 2021a) in both forms.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gl_jax.samplers.base import (
    SampleResult,
    ScoreFn,
    check_order,
    prediction_fn,
    solver_start,
    t_at_half_log_snr,
)
from gl_jax.sde import GaussianDiffusion

__all__ = ["dpm_solver", "dpm_solver_pp"]

DPM_SOLVER_ORDERS = (1, 2, 3)
MULTISTEP_ORDERS = (1, 2, 3)
SINGLESTEP_PP_ORDERS = (1, 2)
VARIANTS_3M = ("taylor", "reference")


def _scan_steps(step: Callable, x: jax.Array, start: int, stop: int) -> jax.Array:
    """Applies `x = step(x, i)` for i in [start, stop) inside one `lax.scan` (no Python loop when traced)."""
    if stop <= start:
        return x
    x, _ = jax.lax.scan(lambda x, i: (step(x, i), None), x, jnp.arange(start, stop))
    return x


def dpm_solver(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int,
    order: int = 3,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "logsnr",
    rho: float = 7.0,
) -> SampleResult:
    """Singlestep DPM-Solver-1/2/3 in the noise prediction (Lu et al. 2022a).

    With h = lambda_t - lambda_s and eps_s = eps_hat(x_s, s), one interval [s, t] is::

      order 1 (DPM-Solver-1 = DDIM, eq. 3.7):  x_t = alpha_t / alpha_s x_s - sigma_t (e^h - 1) eps_s;
      order 2 (Algorithm 1, r1 = 1/2): an order-1 step to s1 = t_lambda(lambda_s + r1 h) gives u, then
        x_t = alpha_t / alpha_s x_s - sigma_t (e^h - 1) [eps_s + (eps(u, s1) - eps_s) / (2 r1)];
      order 3 (Algorithm 2, r1 = 1/3, r2 = 2/3): two intermediate points, see the body.

    Args:
      order: 1, 2 or 3; each interval evaluates the model `order` times.
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`); `key` only draws the starting noise. The paper's grid is "logsnr".

    Returns:
      `SampleResult(x, nfe)` with x at `sde.t_min` and nfe = steps * order.
    """
    check_order(order, DPM_SOLVER_ORDERS, "dpm_solver")
    options = dict(steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)
    x, (ts, lam, alpha, sigma) = solver_start(key, sde, shape, **options)
    eps_fn = prediction_fn(score_fn, sde, "eps")

    def ddim(x_s, eps_s, a_s, a_t, sig_t, h):
        # DPM-Solver-1 (eq. 3.7): exact linear part, eps held constant over the interval.
        return a_t / a_s * x_s - sig_t * jnp.expm1(h) * eps_s

    def step(x_s, i):
        s, a_s, a_t, sig_t = ts[i], alpha[i], alpha[i + 1], sigma[i + 1]
        h = lam[i + 1] - lam[i]  # > 0: the log-SNR grows towards the data.
        eps_s = eps_fn(x_s, s)  # [B, ...]
        x_t = ddim(x_s, eps_s, a_s, a_t, sig_t, h)
        if order == 1:
            return x_t
        if order == 2:
            # Algorithm 1 (DPM-Solver-2): a midpoint-like finite difference of eps in lambda.
            r1 = 0.5
            s1 = t_at_half_log_snr(sde, lam[i] + r1 * h)
            u = ddim(x_s, eps_s, a_s, sde.alpha(s1), sde.sigma(s1), r1 * h)
            return x_t - sig_t / (2.0 * r1) * jnp.expm1(h) * (eps_fn(u, s1) - eps_s)
        # Algorithm 2 (DPM-Solver-3): the second point u2 already uses the first difference D1, the final
        # update only the second difference D2 with the phi_2-type weight (e^h - 1) / h - 1.
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        s1, s2 = t_at_half_log_snr(sde, lam[i] + r1 * h), t_at_half_log_snr(sde, lam[i] + r2 * h)
        sig_s2 = sde.sigma(s2)
        u1 = ddim(x_s, eps_s, a_s, sde.alpha(s1), sde.sigma(s1), r1 * h)
        d1 = eps_fn(u1, s1) - eps_s
        u2 = (
            ddim(x_s, eps_s, a_s, sde.alpha(s2), sig_s2, r2 * h)
            - sig_s2 * r2 / r1 * (jnp.expm1(r2 * h) / (r2 * h) - 1.0) * d1
        )
        d2 = eps_fn(u2, s2) - eps_s
        return x_t - sig_t / r2 * (jnp.expm1(h) / h - 1.0) * d2

    x = _scan_steps(step, x, 0, steps)
    return SampleResult(x, jnp.asarray(steps * order, jnp.int32))


def _pp_multistep_update(x, ms, i, k, lam, alpha, sigma, variant_3m="reference"):
    """One DPM-Solver++ multistep update of order `k` from t_i to t_{i+1}.

    Args:
      x: x_i `[B, ...]`.
      ms: data predictions `[m_i, m_{i-1}, ...]` (newest first, at least `k` of them).
      i: index of the current grid point (an int or a traced scalar).
      k: order (static), 1, 2 or 3.
      lam, alpha, sigma: the grid's `[steps + 1]` half log-SNR, alpha and sigma.
      variant_3m: the third-order update's second difference, see `dpm_solver_pp`.

    Returns:
      x_{i+1}.
    """
    h = lam[i + 1] - lam[i]
    phi_1 = jnp.expm1(-h)  # e^{-h} - 1 < 0.
    # DPM-Solver++(1) = DDIM in the data prediction (Lu et al. 2022b, sec. 4, first order).
    x_t = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * phi_1 * ms[0]
    if k == 1:
        return x_t
    r0 = (lam[i] - lam[i - 1]) / h
    d1_0 = (ms[0] - ms[1]) / r0  # Backward difference of x0_hat in lambda, scaled to the step h.
    if k == 2:
        # Algorithm 2 (DPM-Solver++(2M)): D = (1 + 1/(2 r)) m_i - 1/(2 r) m_{i-1}.
        return x_t - 0.5 * alpha[i + 1] * phi_1 * d1_0
    # DPM-Solver++(3M): x0_hat(lambda) ~ m_i + tau m' + tau^2/2 m'' (tau = lambda - lambda_i) integrated
    # exactly against e^lambda gives the terms phi_2 h m' and phi_3 h^2 m''. From three past predictions,
    # d1 = h m' + O(h^3) and (d1_0 - d1_1) = (r0 + r1) / 2 h^2 m'' + O(h^3), so h^2 m'' ~ 2 (d1_0 - d1_1) /
    # (r0 + r1). The reference implementation of Lu et al. (also k-diffusion's and diffusers') divides by
    # (r0 + r1) without the 2, i.e. takes half the m'' term: local error O(h^3), global order 2.
    r1 = (lam[i - 1] - lam[i - 2]) / h
    d1_1 = (ms[1] - ms[2]) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (2.0 if variant_3m == "taylor" else 1.0) * (d1_0 - d1_1) / (r0 + r1)
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    return x_t + alpha[i + 1] * phi_2 * d1 - alpha[i + 1] * phi_3 * d2


def dpm_solver_pp(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int,
    order: int = 2,
    multistep: bool = True,
    variant_3m: str = "reference",
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "logsnr",
    rho: float = 7.0,
) -> SampleResult:
    """DPM-Solver++ in the data prediction x0_hat (Lu et al. 2022b).

    Multistep (2M, Algorithm 2; 3M): one model evaluation per step, reusing the previous steps' predictions;
    the first `order - 1` steps use orders 1, 2, ... as the paper's warm-up (no lower-order final steps).
    Singlestep (2S, Algorithm 1 with r = 1/2): two evaluations per step. Order 1 is DDIM in both.

    Args:
      order: 1, 2 or 3 when `multistep`, 1 or 2 otherwise.
      multistep: multistep (nfe = steps) or singlestep (nfe = order * steps).
      variant_3m: the 3M update's estimate of h^2 x0_hat'' from three past predictions: `"reference"`
        (the default, as the reference implementation of Lu et al., k-diffusion and diffusers: half the
        Taylor coefficient, so global order 2, which trades order for a smaller error at few steps; see
        `benchmarks/p1_sampler_error.py`) or `"taylor"` (the Taylor coefficient, global order 3). Ignored
        unless order 3.
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`); `key` only draws the starting noise.

    Returns:
      `SampleResult(x, nfe)` with x at `sde.t_min`.
    """
    if variant_3m not in VARIANTS_3M:
        raise ValueError(f"Unknown variant_3m {variant_3m!r}; choose one of {VARIANTS_3M}.")
    if multistep:
        check_order(order, MULTISTEP_ORDERS, "dpm_solver_pp(multistep=True)")
    else:
        check_order(order, SINGLESTEP_PP_ORDERS, "dpm_solver_pp(multistep=False)")
    options = dict(steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)
    x, (ts, lam, alpha, sigma) = solver_start(key, sde, shape, **options)
    x0_fn = prediction_fn(score_fn, sde, "x0")

    if not multistep:

        def step(x_s, i):
            h = lam[i + 1] - lam[i]
            m_s = x0_fn(x_s, ts[i])
            if order == 1:
                d = m_s
            else:
                # Algorithm 1 (DPM-Solver++(2S)), r = 1/2: an order-1 step to the log-SNR midpoint s1, whose
                # prediction replaces m_s (the weights 1 - 1/(2r) and 1/(2r) are 0 and 1).
                s1 = t_at_half_log_snr(sde, lam[i] + 0.5 * h)
                u = sde.sigma(s1) / sigma[i] * x_s - sde.alpha(s1) * jnp.expm1(-0.5 * h) * m_s
                d = x0_fn(u, s1)
            return sigma[i + 1] / sigma[i] * x_s - alpha[i + 1] * jnp.expm1(-h) * d

        x = _scan_steps(step, x, 0, steps)
        return SampleResult(x, jnp.asarray(steps * order, jnp.int32))

    # Warm-up (unrolled in Python, at most two steps): step i uses order i + 1 while history is short.
    warmup = min(order - 1, steps)
    hist = []  # Data predictions, newest first.
    for i in range(warmup):
        hist = [x0_fn(x, ts[i])] + hist
        x = _pp_multistep_update(x, hist, i, i + 1, lam, alpha, sigma, variant_3m)

    if steps > warmup:
        # The scan carries the last `order - 1` predictions, [order - 1, B, ...], newest first.
        def step(carry, i):
            x, past = carry
            m = x0_fn(x, ts[i])
            ms = [m] + [past[j] for j in range(order - 1)]
            x = _pp_multistep_update(x, ms, i, order, lam, alpha, sigma, variant_3m)
            return (x, jnp.stack(ms[: order - 1]) if order > 1 else past), None

        past = jnp.stack(hist) if hist else jnp.zeros((0,) + x.shape, x.dtype)
        (x, _), _ = jax.lax.scan(step, (x, past), jnp.arange(warmup, steps))
    return SampleResult(x, jnp.asarray(steps, jnp.int32))
