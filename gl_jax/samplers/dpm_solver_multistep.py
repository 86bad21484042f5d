"""Multistep DPM-Solver in the noise prediction (Lu et al. 2022a, sec. 3; multistep form in Lu et al. 2022b).

In the half log-SNR lambda = log(alpha / sigma) the probability-flow ODE has the exact solution (Lu et al.
2022a, eq. 3.4; see `gl_jax.samplers.dpm_solver`)

  x_t = alpha_t / alpha_s x_s - sigma_t int_0^h e^{h - tau} eps_hat(lambda_s + tau) dtau,
  h = lambda_t - lambda_s.

Expanding eps_hat = eps_s + tau eps' + tau^2 / 2 eps'' + ... and integrating each term exactly gives

  x_t = alpha_t / alpha_s x_s - sigma_t [phi_1 eps_s + phi_2 h eps' + phi_3 h^2 eps''],
  phi_1 = e^h - 1,  phi_2 = phi_1 / h - 1,  phi_3 = phi_2 / h - 1/2

(the phi_k here are the reference implementation's, h^{1-k} times the usual phi-functions of exponential
integrators). The singlestep solvers of `gl_jax.samplers.dpm_solver` estimate the derivatives from extra
model evaluations inside the interval; the multistep solvers here take them from the predictions already
made at the previous grid points, so every step costs one model evaluation. With the newest predictions
e_0 = eps_hat(x_i, t_i), e_1, e_2 at t_i, t_{i-1}, t_{i-2}, r_0 = (lambda_i - lambda_{i-1}) / h,
r_1 = (lambda_{i-1} - lambda_{i-2}) / h and the scaled backward differences D1_0 = (e_0 - e_1) / r_0,
D1_1 = (e_1 - e_2) / r_1 (Lu et al. 2022b, appendix, multistep DPM-Solver-2/3 in the noise prediction)::

  order 2:  x_t = alpha_t / alpha_s x_s - sigma_t phi_1 (e_0 + D1_0 / 2),
  order 3:  x_t = alpha_t / alpha_s x_s - sigma_t (phi_1 e_0 + phi_2 D1 + phi_3 D2),
            D1 = D1_0 + r_0 / (r_0 + r_1) (D1_0 - D1_1),  D2 = c (D1_0 - D1_1) / (r_0 + r_1).

D1 = h eps' + O(h^3), and D1_0 - D1_1 = (r_0 + r_1) / 2 h^2 eps'' + O(h^3), so the Taylor coefficient is
c = 2. The reference implementation (the official DPM-Solver code and diffusers' DPMSolverMultistepScheduler
with algorithm_type "dpmsolver") takes c = 1, half the eps'' term: a local error O(h^3), so its "order 3" is
globally of order 2, exactly as for DPM-Solver++(3M) (`gl_jax.samplers.dpm_solver.dpm_solver_pp`). Both are
offered, the reference's by default (`variant_3m`); the tests measure orders 2, 2 and 3.

Order 2 uses the reference's "dpmsolver" form (the finite difference weighted by phi_1 / 2, a midpoint-like
rule) rather than its "taylor" form (weighted by phi_2); both are of order 2.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.samplers.base import SampleResult, ScoreFn, check_order, prediction_fn, solver_start
from gl_jax.sde import GaussianDiffusion

__all__ = ["dpm_solver_multistep", "multistep_orders"]

MULTISTEP_ORDERS = (1, 2, 3)
VARIANTS_3M = ("reference", "taylor")
# The reference implementation lowers the order of the last steps only below this many steps.
LOWER_ORDER_FINAL_BELOW = 10


def multistep_orders(steps: int, order: int, *, lower_order_final: bool) -> np.ndarray:
    """The order of each step `[steps]` of a multistep solver of order `order`.

    Step i (from 0) has at most i + 1 predictions to work with, so it uses order min(order, i + 1) (the
    warm-up). With `lower_order_final` and fewer than 10 steps the last steps also drop the order,
    min(order, steps - i), which the reference implementation of Lu et al. (2022b) found to stabilise
    sampling with very few steps (diffusers uses the same rule below 15 steps).

    Args:
      steps: number of steps.
      order: the solver's order.
      lower_order_final: whether to lower the order of the final steps.

    Returns:
      `[steps]` int orders.
    """
    i = np.arange(steps)
    orders = np.minimum(order, i + 1)
    if lower_order_final and steps < LOWER_ORDER_FINAL_BELOW:
        orders = np.minimum(orders, steps - i)
    return orders


def dpm_solver_multistep(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int,
    order: int = 2,
    variant_3m: str = "reference",
    lower_order_final: bool = True,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "logsnr",
    rho: float = 7.0,
) -> SampleResult:
    """Multistep DPM-Solver-1/2/3 in the noise prediction (Lu et al. 2022a; 2022b, appendix).

    One model evaluation per step, the previous steps' noise predictions reused (the module docstring
    gives the updates). The data-prediction counterpart is `dpm_solver_pp` (DPM-Solver++(2M)/(3M)), the
    singlestep noise-prediction solver `dpm_solver`.

    Args:
      order: 1 (DDIM), 2 or 3.
      variant_3m: the order-3 estimate of h^2 eps'': "reference" (half the Taylor coefficient, as the
        reference implementation and diffusers; global order 2) or "taylor" (global order 3). Ignored
        unless order 3.
      lower_order_final: lower the order of the last steps when there are fewer than 10 (see
        `multistep_orders`), as the reference implementation does by default.
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`); `key` only draws the starting noise.

    Returns:
      `SampleResult(x, nfe)` with x at `sde.t_min` and nfe = steps.

    References:
      Lu et al. 2022a, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around
      10 Steps", NeurIPS. Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
      Probabilistic Models", arXiv:2211.01095.
    """
    check_order(order, MULTISTEP_ORDERS, "dpm_solver_multistep")
    if variant_3m not in VARIANTS_3M:
        raise ValueError(f"Unknown variant_3m {variant_3m!r}; choose one of {VARIANTS_3M}.")
    options = dict(steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)
    x, (ts, lam, alpha, sigma) = solver_start(key, sde, shape, **options)
    eps_fn = prediction_fn(score_fn, sde, "eps")
    c_3m = 2.0 if variant_3m == "taylor" else 1.0

    def update(k, x, es, i):
        """x_{i+1} from x_i by the order-k update, `es` the noise predictions [e_0, e_1, ...]."""
        h = lam[i + 1] - lam[i]
        phi_1 = jnp.expm1(h)
        # Order 1 (DPM-Solver-1 = DDIM): the linear part exactly, eps_hat held at e_0.
        x_t = alpha[i + 1] / alpha[i] * x - sigma[i + 1] * phi_1 * es[0]
        if k == 1:
            return x_t
        r0 = (lam[i] - lam[i - 1]) / h
        d1_0 = (es[0] - es[1]) / r0  # h eps' + O(h^2).
        if k == 2:
            return x_t - 0.5 * sigma[i + 1] * phi_1 * d1_0
        r1 = (lam[i - 1] - lam[i - 2]) / h
        d1_1 = (es[1] - es[2]) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)  # h eps' + O(h^3).
        d2 = c_3m * (d1_0 - d1_1) / (r0 + r1)  # h^2 eps'' (c = 2) or half of it (c = 1).
        phi_2 = phi_1 / h - 1.0
        phi_3 = phi_2 / h - 0.5
        return x_t - sigma[i + 1] * (phi_2 * d1 + phi_3 * d2)

    # One scan over all steps; each step's (static) order picks its update by `lax.switch`, so warm-up and
    # lower-order final steps compile once. The carry holds the last `order - 1` predictions, newest first.
    branches = [functools.partial(update, k) for k in range(1, order + 1)]

    def step(carry, inputs):
        x, past = carry
        i, k = inputs
        es = [eps_fn(x, ts[i])] + [past[j] for j in range(order - 1)]  # [B, ...] each.
        x = jax.lax.switch(k - 1, branches, x, es, i)
        return (x, jnp.stack(es[: order - 1]) if order > 1 else past), None

    past = jnp.zeros((order - 1,) + x.shape, x.dtype)  # [order - 1, B, ...]
    orders = jnp.asarray(multistep_orders(steps, order, lower_order_final=lower_order_final))
    (x, _), _ = jax.lax.scan(step, (x, past), (jnp.arange(steps), orders))
    return SampleResult(x, jnp.asarray(steps, jnp.int32))
