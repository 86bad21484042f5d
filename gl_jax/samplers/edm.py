"""EDM's Heun sampler with optional stochastic churn (Karras et al. 2022, algorithm 2), for any process.

EDM works with the noise-to-signal ratio sigma = sigma(t) / alpha(t) and the scaled state x / alpha(t),
for which every Gaussian diffusion becomes x = x_0 + sigma n (Karras et al. 2022, sec. 4, eq. 4 with
s(t) = alpha(t)); the denoiser D(x; sigma) = E[x_0 | x] comes from the score by Tweedie's formula.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gl_jax.parametrization import denoised
from gl_jax.samplers.base import SampleResult, ScoreFn, start_point, time_grid
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = ["edm_sampler"]


def edm_sampler(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int = 18,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "karras",
    rho: float = 7.0,
) -> SampleResult:
    """Heun's method on the probability-flow ODE in sigma, the last step Euler to sigma = 0 (algorithm 2).

    Args:
      s_churn, s_tmin, s_tmax, s_noise: stochasticity (EDM, table 5; CIFAR-10 VP: 30, 0.01, 1, 1.007; VE: 80,
        0.05, 1, 1.007); s_churn = 0 is the deterministic sampler. s_tmin and s_tmax are in sigma units.
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`). The N = `steps` intervals run between the noise levels sigma_0 > ... >
        sigma_{N-1} = sigma(t_min) / alpha(t_min) > sigma_N = 0: N - 1 Heun steps on
        `time_grid(sde, N - 1, grid=grid, ...)` (an array `grid` holds those N times), then one Euler
        step to 0, so nfe = 2N - 1 (35 for N = 18, EDM's CIFAR-10 setting). "karras" is EDM's grid.

    Returns:
      `SampleResult(x, nfe)`: x is D(x; sigma_{N-1}), the data estimate at sigma_N = 0.
    """
    if steps < 2:
        raise ValueError(f"edm_sampler needs steps >= 2, got {steps}.")
    key_init, key_loop = jax.random.split(key)
    x = start_point(key_init, sde, shape, x_init)
    ts = time_grid(sde, steps - 1, grid=grid, t_start=t_start, rho=rho)  # [N]
    sigmas = sde.sigma(ts) / sde.alpha(ts)  # [N], decreasing.
    batch = shape[0]

    def denoise(x_scaled, sigma):
        """D(x; sigma) for the scaled state x / alpha at the time whose noise-to-signal ratio is sigma."""
        t = sde.t_from_log_snr(jnp.full((batch,), -2.0 * jnp.log(sigma)))
        a, s = broadcast_to_data(sde.alpha(t), x_scaled), broadcast_to_data(sde.sigma(t), x_scaled)
        x = a * x_scaled
        return denoised(score_fn(x, t), x, a, s)

    gamma_max = math.sqrt(2.0) - 1.0

    def churn(x, i):
        sigma = sigmas[i]
        gamma = jnp.where((sigma >= s_tmin) & (sigma <= s_tmax), min(s_churn / steps, gamma_max), 0.0)
        sigma_hat = sigma * (1.0 + gamma)
        noise = jax.random.normal(jax.random.fold_in(key_loop, i), x.shape)
        # sqrt(sigma_hat^2 - sigma^2) written so that gamma = 0 gives exactly 0 (no fused-rounding NaN).
        return x + sigma * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise * noise, sigma_hat

    def heun(x, i):
        x_hat, sigma_hat = churn(x, i)
        d = (x_hat - denoise(x_hat, sigma_hat)) / sigma_hat
        sigma_next = sigmas[i + 1]
        x_next = x_hat + (sigma_next - sigma_hat) * d
        d_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
        return x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next), None

    x = x / broadcast_to_data(sde.alpha(jnp.full((batch,), ts[0])), x)
    x, _ = jax.lax.scan(heun, x, jnp.arange(steps - 1))
    # Last step: Euler from sigma_{N-1} to 0, which lands on the denoiser's output.
    x_hat, sigma_hat = churn(x, steps - 1)
    x = denoise(x_hat, sigma_hat)
    return SampleResult(x, jnp.asarray(2 * steps - 1))
