"""Predictor-corrector sampling (Song et al. 2021, "Score-Based Generative Modeling through SDEs", sec. 4.2).

Each step moves from t to s < t with a predictor (a discretisation of the reverse SDE), then refines at s
with `n_corrector_steps` of a score-based MCMC corrector. Predictors and correctors are small pure functions
chosen from explicit tables; the loop is one `lax.scan` on device. `pc_loop` also takes a projection applied
after every step, which `gl_jax.samplers.conditional` uses for inpainting and colorization.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gl_jax.parametrization import denoised
from gl_jax.registry import Registry
from gl_jax.samplers.base import SampleResult, ScoreFn, start
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = ["pc_sampler", "pc_loop", "PREDICTORS", "CORRECTORS", "posterior_step"]


def _full(t: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.full((x.shape[0],), t)


def posterior_step(
    x: jax.Array, x0: jax.Array, sde: GaussianDiffusion, t: jax.Array, s: jax.Array, *, eta: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Mean and std of the generalised DDPM/DDIM step q(x_s | x_t, x_0 = x0) from t to s < t.

    With alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2, the
    posterior has std c = sigma_{t|s} sigma_s / sigma_t (Kingma et al. 2021, appendix A). DDIM (Song et al.
    2021a, eq. 12) keeps the marginals with any std eta * c:
    x_s = alpha_s x0 + sqrt(sigma_s^2 - (eta c)^2) eps_hat + eta c z, eps_hat = (x_t - alpha_t x0) / sigma_t.
    eta = 1 is ancestral sampling (Ho et al. 2020).

    Args:
      x: `[B, ...]` current state at t.
      x0: `[B, ...]` predicted clean data.
      sde: the process.
      t, s: scalar times, s < t.
      eta: stochasticity.

    Returns:
      `(mean, std)`: the deterministic part of x_s `[B, ...]` and the std of the added noise (scalar).
    """
    a_t, s_t = sde.alpha(t), sde.sigma(t)
    a_s, s_s = sde.alpha(s), sde.sigma(s)
    var_ts = s_t**2 - (a_t / a_s) ** 2 * s_s**2
    std = eta * jnp.sqrt(jnp.maximum(var_ts, 0.0)) * s_s / s_t
    eps = (x - a_t * x0) / s_t
    mean = a_s * x0 + jnp.sqrt(jnp.maximum(s_s**2 - std**2, 0.0)) * eps
    return mean, std


# --- Predictors: (key, score_fn, sde, x, t, s) -> (x, x_mean). ---


def _euler_maruyama(key, score_fn, sde, x, t, s):
    """Euler-Maruyama on the reverse SDE dx = [f x - g^2 score] dt + g dw_bar (Song et al. 2021, eq. 6).

    It is also the "reverse_diffusion" predictor, the reverse of the discretised forward SDE
    x + f dt + G z with G = g sqrt(dt) (Song et al. 2021, eq. 46): with f and g taken at t, as here for every
    process, its mean x - f dt + G^2 score is the same; score_sde's two differ only where a process has its
    own discretisation (DDPM's betas).
    """
    dt, tb = t - s, _full(t, x)
    x_mean = x - sde.reverse_drift(x, tb, score_fn(x, tb), probability_flow=False) * dt
    g = broadcast_to_data(jnp.sqrt(sde.g2(tb)), x)
    return x_mean + g * jnp.sqrt(dt) * jax.random.normal(key, x.shape), x_mean


def _ancestral(key, score_fn, sde, x, t, s):
    """Ancestral sampling from q(x_s | x_t, x0_hat), x0_hat by Tweedie (Ho et al. 2020; Song et al. 2021).

    For the VP SDE this is DDPM's sampler, for the VE SDE SMLD's; it is `ddim` with eta = 1.
    """
    tb = _full(t, x)
    a_t, s_t = broadcast_to_data(sde.alpha(tb), x), broadcast_to_data(sde.sigma(tb), x)
    x0 = denoised(score_fn(x, tb), x, a_t, s_t)
    mean, std = posterior_step(x, x0, sde, t, s, eta=1.0)
    return mean + std * jax.random.normal(key, x.shape), mean


PREDICTORS = Registry(
    "predictor",
    {"euler_maruyama": _euler_maruyama, "reverse_diffusion": _euler_maruyama, "ancestral": _ancestral},
)


# --- Correctors: (key, score_fn, sde, x, s, alpha, snr) -> (x, x_mean), at time s. ---


def _norm(v: jax.Array) -> jax.Array:
    """Mean over the batch of per-example L2 norms (score_sde's step rule)."""
    return jnp.mean(jnp.linalg.norm(jnp.reshape(v, (v.shape[0], -1)), axis=-1))


def _langevin(key, score_fn, sde, x, s, alpha, snr):
    """Langevin MCMC with the step set by a target signal-to-noise ratio (Song et al. 2021, algorithm 5):
    eps = 2 alpha (snr ||z|| / ||score||)^2, x <- x + eps score + sqrt(2 eps) z.
    """
    del sde
    grad = score_fn(x, _full(s, x))
    z = jax.random.normal(key, x.shape)
    step = 2.0 * alpha * (snr * _norm(z) / _norm(grad)) ** 2
    x_mean = x + step * grad
    return x_mean + jnp.sqrt(2.0 * step) * z, x_mean


def _annealed_langevin(key, score_fn, sde, x, s, alpha, snr):
    """Annealed Langevin dynamics with step 2 alpha (snr sigma_s)^2 (Song & Ermon 2019; score_sde's ALD)."""
    sb = _full(s, x)
    grad = score_fn(x, sb)
    step = broadcast_to_data(2.0 * alpha * (snr * sde.sigma(sb)) ** 2, x)
    x_mean = x + step * grad
    return x_mean + jnp.sqrt(2.0 * step) * jax.random.normal(key, x.shape), x_mean


# `corrector=None` means none.
CORRECTORS = Registry("corrector", {"langevin": _langevin, "annealed_langevin": _annealed_langevin})


def pc_loop(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    x: jax.Array,
    ts: jax.Array,
    *,
    predictor: str = "reverse_diffusion",
    corrector: str | None = "langevin",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    project: Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The predictor-corrector loop over a decreasing time grid `ts` `[N + 1]`, starting from `x` at ts[0].

    `project(key, x, s)`, if given, is applied to the state and to its mean after every predictor and
    corrector step at time s (inpainting replaces the observed part by a noised copy of the observation).

    Returns:
      `(x, x_mean, nfe)`: the last state at ts[-1], its mean without the last step's noise, and the number
      of score evaluations, N * (1 + n_corrector_steps) (N without a corrector).
    """
    predict = PREDICTORS[predictor]
    correct = None if corrector is None else CORRECTORS[corrector]
    proj = project or (lambda key, x, s: x)

    def step(carry, i):
        x, _ = carry
        t, s = ts[i], ts[i + 1]
        k_pred, k_proj, k_corr = jax.random.split(jax.random.fold_in(key, i), 3)
        x, x_mean = predict(k_pred, score_fn, sde, x, t, s)
        x, x_mean = proj(k_proj, x, s), proj(k_proj, x_mean, s)
        if correct is not None:
            # score_sde's VP corrector uses alpha_i = 1 - beta_i, the per-step signal decay; in general
            # (alpha_s / alpha_t)^2 (= 1 for VE).
            alpha = (sde.alpha(s) / sde.alpha(t)) ** 2
            for j in range(n_corrector_steps):
                k_c, k_p = jax.random.split(jax.random.fold_in(k_corr, j))
                x, x_mean = correct(k_c, score_fn, sde, x, s, alpha, snr)
                x, x_mean = proj(k_p, x, s), proj(k_p, x_mean, s)
        return (x, x_mean), None

    steps = ts.shape[0] - 1
    (x, x_mean), _ = jax.lax.scan(step, (x, x), jnp.arange(steps))
    nfe = steps * (1 + (n_corrector_steps if correct is not None else 0))
    return x, x_mean, jnp.asarray(nfe)


def pc_sampler(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int = 1000,
    predictor: str = "reverse_diffusion",
    corrector: str | None = "langevin",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    denoise_last: bool = True,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "uniform",
    rho: float = 7.0,
) -> SampleResult:
    """Predictor-corrector sampler (Song et al. 2021, algorithm 1 with algorithms 2-5).

    Args:
      predictor: "euler_maruyama", "reverse_diffusion" or "ancestral".
      corrector: "langevin", "annealed_langevin" or None.
      snr: the corrector's signal-to-noise ratio (0.16 for CIFAR-10 in score_sde; 0.075 for VE 256x256).
      n_corrector_steps: corrector steps per predictor step.
      denoise_last: return the last mean without its noise (score_sde's `noise_removal`).
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`); one predictor step per interval.

    Returns:
      `SampleResult(x, nfe)` with nfe = steps * (1 + n_corrector_steps) (or `steps` without a corrector).
    """
    key_init, key_loop = jax.random.split(key)
    x, ts = start(key_init, sde, shape, steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)
    options = dict(predictor=predictor, corrector=corrector, snr=snr, n_corrector_steps=n_corrector_steps)
    x, x_mean, nfe = pc_loop(key_loop, score_fn, sde, x, ts, **options)
    return SampleResult(x_mean if denoise_last else x, nfe)
