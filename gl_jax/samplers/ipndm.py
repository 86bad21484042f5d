"""iPNDM: Adams-Bashforth on the probability-flow ODE in the noise-to-signal ratio (Zhang & Chen 2023).

With the scaled state y = x / alpha and the noise-to-signal ratio rho = sigma / alpha = e^{-lambda}, every
Gaussian diffusion's probability-flow ODE becomes (Zhang & Chen 2023, "DEIS", sec. 4, eq. 14; Karras et al.
2022, eq. 4 with s(t) = alpha(t))

  dy / drho = eps_hat(alpha y, t(rho)),

whose Euler step is DDIM. PNDM (Liu et al. 2022) replaces eps_hat in the DDIM step by a four-step linear
multistep combination of past predictions, started by Runge-Kutta steps (12 model evaluations for the first
three steps); iPNDM (DEIS, sec. 5 and appendix) starts it instead with the lower-order Adams-Bashforth
formulas, so every step costs one evaluation:

  y_{i+1} = y_i + (rho_{i+1} - rho_i) sum_{j<k} b_{k,j} eps_{i-j},   k = min(max_order, i + 1),

with the Adams-Bashforth weights of a uniform grid, b_1 = (1), b_2 = (3, -1) / 2, b_3 = (23, -16, 5) / 12,
b_4 = (55, -59, 37, -9) / 24. For the EDM process (alpha = 1, rho = sigma = t) this is k-diffusion's
sample_ipndm.

Those weights integrate polynomials exactly only on a grid uniform in rho. On any other grid (Karras,
log-SNR) the method stays consistent but its local error is O(h^3) from the varying step, so its global
order falls to 2, which the tests measure; it nonetheless does well at 5-10 steps (Zhou et al. 2024,
"Fast ODE-based Sampling for Diffusion Models in Around 5 Steps", CVPR, sec. 5). `variable_step=True`
uses instead the weights that integrate the interpolating polynomial through the past (rho, eps) points
over [rho_i, rho_{i+1}] exactly (Adams-Bashforth for variable steps; Hairer, Norsett & Wanner, "Solving
Ordinary Differential Equations I", sec. III.5), of global order 4 on any smooth grid.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.samplers.base import SampleResult, ScoreFn, prediction_fn, solver_start
from gl_jax.sde import GaussianDiffusion

__all__ = ["adams_bashforth_weights", "ipndm"]

IPNDM_ORDERS = (1, 2, 3, 4)


def adams_bashforth_weights(nodes: jax.Array, k: int) -> jax.Array:
    """Weights `[k]` with sum_j w_j p(nodes[j]) = int_0^1 p for every polynomial p of degree < k.

    Args:
      nodes: the past points in units of the step, `[>= k]`, newest first: 0, (rho_{i-1} - rho_i) /
        (rho_{i+1} - rho_i), ... (0, -1, -2, ... on a uniform grid).
      k: the number of points used (static).

    Returns:
      `[k]` weights; on a uniform grid the classical Adams-Bashforth coefficients.
    """
    tau = nodes[:k]
    vandermonde = jnp.stack([tau**n for n in range(k)])  # [k, k]: row n holds the nodes to the power n.
    moments = 1.0 / jnp.arange(1, k + 1, dtype=tau.dtype)  # int_0^1 tau^n dtau.
    return jnp.linalg.solve(vandermonde, moments)


# iPNDM's weights b_k (the classical Adams-Bashforth coefficients), row k - 1 for order k, zero-padded.
UNIFORM_WEIGHTS = np.array(
    [
        [1.0, 0.0, 0.0, 0.0],
        [3.0 / 2.0, -1.0 / 2.0, 0.0, 0.0],
        [23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0, 0.0],
        [55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
    ]
)


def ipndm(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int,
    max_order: int = 4,
    variable_step: bool = False,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "karras",
    rho: float = 7.0,
) -> SampleResult:
    """iPNDM: Adams-Bashforth steps in rho = sigma / alpha on y = x / alpha, lower orders to start.

    Args:
      max_order: 1 (DDIM) to 4 (iPNDM); step i uses order min(max_order, i + 1).
      variable_step: the Adams-Bashforth weights of the actual grid (global order 4 on any smooth grid)
        instead of iPNDM's uniform-grid weights (order 4 only on a grid uniform in rho, order 2 on others;
        see the module docstring).
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`); `key` only draws the starting noise; one model evaluation per step.
        "karras" is the grid of k-diffusion's sample_ipndm and of Zhou et al. (2024).

    Returns:
      `SampleResult(x, nfe)` with x at `sde.t_min` and nfe = steps.

    References:
      Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", ICLR (DEIS;
      iPNDM). Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds", ICLR (PNDM).
    """
    if max_order not in IPNDM_ORDERS:
        raise ValueError(f"ipndm supports max_order in {IPNDM_ORDERS}, got {max_order!r}.")
    options = dict(steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)
    x, (ts, _, alpha, sigma) = solver_start(key, sde, shape, **options)
    eps_fn = prediction_fn(score_fn, sde, "eps")
    nsr = sigma / alpha  # [steps + 1] rho, decreasing towards the data.
    uniform = jnp.asarray(UNIFORM_WEIGHTS, x.dtype)

    def padded_weights(k, nodes):
        return jnp.pad(adams_bashforth_weights(nodes, k), (0, max_order - k))

    variable_weights = [functools.partial(padded_weights, k) for k in range(1, max_order + 1)]

    def weights(i, k):
        """`[max_order]` weights of step i at order k (traced), zero beyond k."""
        if not variable_step:
            return uniform[k - 1, :max_order]
        j = jnp.arange(max_order)
        nodes = (nsr[jnp.maximum(i - j, 0)] - nsr[i]) / (nsr[i + 1] - nsr[i])  # [max_order]
        # Points before the first stand at the uniform grid's -j: unused by order k, but every branch's
        # Vandermonde matrix stays regular (`lax.switch` under `vmap` evaluates all, also in gradients).
        nodes = jnp.where(j <= i, nodes, -j.astype(nodes.dtype))
        return jax.lax.switch(k - 1, variable_weights, nodes)

    def step(carry, i):
        y, past = carry
        e = eps_fn(alpha[i] * y, ts[i])  # [B, ...]
        es = jnp.concatenate([e[None], past])  # [max_order, B, ...], newest first.
        k = jnp.minimum(i + 1, max_order)
        w = weights(i, k).reshape((max_order,) + (1,) * e.ndim)
        y = y + (nsr[i + 1] - nsr[i]) * jnp.sum(w * es, axis=0)
        return (y, es[:-1]), None

    past = jnp.zeros((max_order - 1,) + x.shape, x.dtype)  # Never weighted before it is filled.
    (y, _), _ = jax.lax.scan(step, (x / alpha[0], past), jnp.arange(steps))
    return SampleResult(alpha[-1] * y, jnp.asarray(steps, jnp.int32))
