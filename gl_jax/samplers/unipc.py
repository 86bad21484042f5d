"""UniPC: a unified predictor-corrector for the probability-flow ODE (Zhao et al. 2023, "UniPC").

In the data prediction and the half log-SNR lambda = log(alpha / sigma) (see `gl_jax.samplers.dpm_solver`),
one step from t_i to t_{i+1} with h = lambda_{i+1} - lambda_i and the past predictions m_i, m_{i-1}, ... is::

  UniP-p (predictor):  x~_{i+1} = sigma_{i+1}/sigma_i x_i - alpha_{i+1} (e^{-h} - 1) m_i
                                  - alpha_{i+1} B(-h) sum_{k<p} a_k D_k / r_k,
  UniC-p (corrector):  x_{i+1}  = same base - alpha_{i+1} B(-h) (sum_{k<p} a^c_k D_k / r_k + a^c_p D_p),

with r_k = (lambda_{i-k} - lambda_i) / h, D_k = m_{i-k} - m_i, D_p = m_{i+1} - m_i for the prediction
m_{i+1} = x0_hat(x~_{i+1}, t_{i+1}) at the predictor's output, and the coefficients solving the order
conditions R_p a = phi_p(-h) / B(-h) (Zhao et al. 2023, sec. 3, UniC and UniP with their order conditions;
signs as in the authors' reference implementation, where the data prediction integrates in -h).
B(h) = h ("bh1") or e^h - 1 ("bh2").
The corrector raises the order by one for free: m_{i+1} is the model evaluation the next step needs anyway.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gl_jax.samplers.base import SampleResult, ScoreFn, check_order, prediction_fn, solver_start
from gl_jax.sde import GaussianDiffusion

__all__ = ["unipc"]

UNIPC_ORDERS = (1, 2, 3)
UNIPC_VARIANTS = ("bh1", "bh2")


def _coefficients(h, rks, k, variant):
    """The order-condition system of UniPC (Zhao et al. 2023, sec. 3).

    Args:
      h: the step in lambda (> 0).
      rks: `[k]` ratios r_1 .. r_{k-1} of past steps to h, then 1 (the corrector's new point).
      k: order (static).
      variant: "bh1" or "bh2".

    Returns:
      `(B, R, b)`: B(h), the Vandermonde matrix `[k, k]` R[n, j] = rks[j]^n, and
      b[n] = (n + 1)! z phi_{n+2}(z) / B(h) with z = -h, the integrals of the Taylor terms.
    """
    hh = -h  # The data prediction integrates e^{lambda} backwards from lambda_{i+1}.
    b_h = hh if variant == "bh1" else jnp.expm1(hh)
    # z phi_{n+1}(z) at z = hh, by phi_{n+1}(z) = (phi_n(z) - 1/n!) / z from phi_1(z) = (e^z - 1) / z.
    h_phi = jnp.expm1(hh) / hh - 1.0
    b = []
    for n in range(1, k + 1):
        b.append(h_phi * math.factorial(n) / b_h)
        h_phi = h_phi / hh - 1.0 / math.factorial(n + 1)
    rks = jnp.stack(rks)  # [k]
    r = jnp.stack([rks**n for n in range(k)])  # [k, k]
    return b_h, r, jnp.stack(b)


def _unipc_update(x, ms, i, k, *, lam, alpha, sigma, variant, x0_fn, t_next, corrector):
    """One UniP-k step from t_i to t_{i+1}, then (if `corrector`) UniC-k.

    Args:
      x: x_i `[B, ...]`.
      ms: data predictions `[m_i, m_{i-1}, ...]`, newest first, at least `k` of them.
      i: current grid index (int or traced scalar).
      k: order (static).
      lam, alpha, sigma: the grid's `[steps + 1]` half log-SNR, alpha and sigma.
      variant: "bh1" or "bh2".
      x0_fn: the data prediction `x0_fn(x, t)`.
      t_next: t_{i+1}.
      corrector: whether to evaluate the model at the prediction and correct.

    Returns:
      `(x_{i+1}, m_{i+1})`, with `m_{i+1}` None without the corrector.
    """
    h = lam[i + 1] - lam[i]
    rks = [(lam[i - j] - lam[i]) / h for j in range(1, k)] + [jnp.ones_like(h)]
    d1s = [(ms[j] - ms[0]) / rks[j - 1] for j in range(1, k)]  # Scaled backward differences, [B, ...].
    b_h, r, b = _coefficients(h, rks, k, variant)
    # The exactly integrated linear part plus the zeroth-order term (DDIM in the data prediction).
    x_base = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * jnp.expm1(-h) * ms[0]

    def weighted(rhos, ds):
        return sum((rhos[j] * ds[j] for j in range(len(ds))), jnp.zeros_like(x))

    if k == 1:
        x_pred = x_base
    else:
        # UniP-2 uses the limit a_1 = 1/2 of its 1x1 system (as the reference implementation), which makes
        # the bh2 predictor exactly DPM-Solver++(2M); higher orders solve the system.
        rhos_p = jnp.array([0.5]) if k == 2 else jnp.linalg.solve(r[:-1, :-1], b[:-1])
        x_pred = x_base - alpha[i + 1] * b_h * weighted(rhos_p, d1s)
    if not corrector:
        return x_pred, None
    m_next = x0_fn(x_pred, t_next)
    # UniC-1 likewise uses the limit 1/2 (a trapezoidal rule in lambda); higher orders solve R a = b.
    rhos_c = jnp.array([0.5]) if k == 1 else jnp.linalg.solve(r, b)
    corr = weighted(rhos_c[:-1], d1s) + rhos_c[-1] * (m_next - ms[0])
    return x_base - alpha[i + 1] * b_h * corr, m_next


def unipc(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int,
    order: int = 2,
    variant: str = "bh2",
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "logsnr",
    rho: float = 7.0,
) -> SampleResult:
    """Multistep UniPC-p: UniP-p predictor with UniC-p corrector in the data prediction (Zhao et al. 2023).

    The first `order - 1` steps use orders 1, 2, ... while the history fills (the paper's warm-up); the
    last step is not corrected (its model evaluation would serve no next step). UniPC-p has order p + 1
    (Zhao et al. 2023, sec. 3), 3 and 4 for p = 2, 3 as the tests check: the lower-order warm-up steps are
    taken at high noise, where the prediction barely moves, so they do not lower the order.

    Args:
      order: predictor order p, 1, 2 or 3.
      variant: B(h) = h ("bh1") or e^h - 1 ("bh2"; the paper recommends bh2 for guided sampling / few
        steps and bh1 for unconditional sampling).
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`); `key` only draws the starting noise; one model evaluation per interval.

    Returns:
      `SampleResult(x, nfe)` with x at `sde.t_min` and nfe = steps.
    """
    check_order(order, UNIPC_ORDERS, "unipc")
    if variant not in UNIPC_VARIANTS:
        raise ValueError(f"unipc supports variant in {UNIPC_VARIANTS}, got {variant!r}.")
    options = dict(steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)
    x, (ts, lam, alpha, sigma) = solver_start(key, sde, shape, **options)
    x0_fn = prediction_fn(score_fn, sde, "x0")

    def update(x, ms, i, k, corrector):
        kw = dict(lam=lam, alpha=alpha, sigma=sigma, variant=variant, x0_fn=x0_fn, t_next=ts[i + 1])
        return _unipc_update(x, ms, i, k, corrector=corrector, **kw)

    hist = [x0_fn(x, ts[0])]  # Data predictions, newest first.
    # Warm-up (unrolled in Python, at most two steps): step i has order i + 1.
    warmup = min(order - 1, steps)
    for i in range(warmup):
        x, m = update(x, hist, i, i + 1, i < steps - 1)
        hist = [m] + hist if m is not None else hist

    if steps - 1 >= warmup:
        # Full-order corrected steps in one scan; the carry holds the last `order` predictions, newest first.
        def step(carry, i):
            x, past = carry
            x, m = update(x, [past[j] for j in range(order)], i, order, True)
            return (x, jnp.concatenate([m[None], past[:-1]])), None

        (x, past), _ = jax.lax.scan(step, (x, jnp.stack(hist)), jnp.arange(warmup, steps - 1))
        x, _ = update(x, [past[j] for j in range(order)], steps - 1, order, False)
    return SampleResult(x, jnp.asarray(steps, jnp.int32))
