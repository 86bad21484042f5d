"""An analytic test bed: Gaussian-mixture data whose noised marginals, scores and densities are exact.

If x_0 ~ sum_k w_k N(mu_k, diag(s_k^2)) and x_t = alpha(t) x_0 + sigma(t) eps, then
x_t ~ sum_k w_k N(alpha mu_k, diag(alpha^2 s_k^2 + sigma^2)) for every Gaussian diffusion in `gl_jax.sde`,
so the score, the noise prediction E[eps | x_t], the denoiser E[x_0 | x_t] and log p_t are all closed-form.
Use it to check a sampler, a likelihood estimator or a loss without training anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.parametrization import denoised
from gl_jax.sde import GaussianDiffusion

__all__ = ["GaussianMixture", "gaussian", "random_mixture"]


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """sum_k weights[k] N(means[k], diag(stds[k]^2)) in D dimensions.

    Attributes:
      weights: `[K]`, summing to 1.
      means: `[K, D]`.
      stds: `[K, D]` per-dimension standard deviations (or `[K]` for isotropic components).
    """

    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray

    def __post_init__(self):
        means = np.asarray(self.means, np.float32)
        stds = np.asarray(self.stds, np.float32)
        if stds.ndim == 1:
            stds = np.repeat(stds[:, None], means.shape[1], axis=1)
        weights = np.asarray(self.weights, np.float64)
        if not np.isclose(weights.sum(), 1.0, atol=1e-6):
            raise ValueError(f"Mixture weights must sum to 1, got {weights.sum()}.")
        if stds.shape != means.shape or weights.shape != (means.shape[0],):
            raise ValueError(
                f"Shapes disagree: weights {weights.shape}, means {means.shape}, stds {stds.shape}."
            )
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "weights", (weights / weights.sum()).astype(np.float32))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # --- Clean data. ---

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """Exact samples `[n, D]`."""
        k_comp, k_eps = jax.random.split(key)
        comp = jax.random.choice(k_comp, len(self.weights), (n,), p=jnp.asarray(self.weights))
        eps = jax.random.normal(k_eps, (n, self.dim))
        return jnp.asarray(self.means)[comp] + jnp.asarray(self.stds)[comp] * eps

    def sample_numpy(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Exact samples `[n, D]` from a NumPy generator."""
        p = self.weights.astype(np.float64)
        comp = rng.choice(len(p), size=n, p=p / p.sum())
        return (self.means[comp] + self.stds[comp] * rng.standard_normal((n, self.dim))).astype(np.float32)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Exact log-density `[B]` at `x` `[B, D]`."""
        return self._log_prob(x, jnp.ones(x.shape[:1]), jnp.zeros(x.shape[:1]))

    def mean(self) -> np.ndarray:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> np.ndarray:
        """The mixture's covariance `[D, D]`."""
        m = self.mean()
        second = sum(
            w * (np.diag(s**2) + np.outer(mu, mu))
            for w, mu, s in zip(self.weights, self.means, self.stds, strict=True)
        )
        return second - np.outer(m, m)

    # --- Noised marginals p_t. ---

    def _components(self, alpha, sigma):
        """Per-component means `[B, K, D]` and variances `[B, K, D]` of p_t."""
        a, s = alpha[:, None, None], sigma[:, None, None]
        return a * jnp.asarray(self.means)[None], a**2 * jnp.asarray(self.stds)[None] ** 2 + s**2

    def _log_prob(self, x, alpha, sigma):
        mean, var = self._components(alpha, sigma)
        diff = x[:, None, :] - mean  # [B, K, D]
        comp = -0.5 * jnp.sum(diff**2 / var + jnp.log(2 * jnp.pi * var), axis=-1)  # [B, K]
        return jax.nn.logsumexp(comp + jnp.log(jnp.asarray(self.weights)), axis=-1)

    def marginal_log_prob(self, sde: GaussianDiffusion, x: jax.Array, t: jax.Array) -> jax.Array:
        """Exact log p_t(x) `[B]` for `x` `[B, D]` at times `t` `[B]`."""
        return self._log_prob(x, sde.alpha(t), sde.sigma(t))

    def score_fn(self, sde: GaussianDiffusion) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """The exact score `s(x, t) = grad_x log p_t(x)`, `[B, D]` for `x` `[B, D]`, `t` `[B]`."""

        def score(x, t):
            mean, var = self._components(sde.alpha(t), sde.sigma(t))
            diff = x[:, None, :] - mean  # [B, K, D]
            logits = jnp.log(jnp.asarray(self.weights)) - 0.5 * jnp.sum(
                diff**2 / var + jnp.log(2 * jnp.pi * var), axis=-1
            )  # [B, K]
            resp = jax.nn.softmax(logits, axis=-1)[..., None]  # Posterior over components.
            return jnp.sum(resp * (-diff / var), axis=1)

        return score

    def eps_fn(self, sde: GaussianDiffusion) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """The exact noise prediction E[eps | x_t] = -sigma(t) s(x, t)."""
        score = self.score_fn(sde)
        return lambda x, t: -sde.sigma(t)[:, None] * score(x, t)

    def denoiser_fn(self, sde: GaussianDiffusion) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """The exact denoiser E[x_0 | x_t] = (x + sigma^2 s(x, t)) / alpha (Tweedie's formula)."""
        score = self.score_fn(sde)

        def denoiser(x, t):
            return denoised(score(x, t), x, sde.alpha(t)[:, None], sde.sigma(t)[:, None])

        return denoiser


def gaussian(mean: np.ndarray, std: np.ndarray | float) -> GaussianMixture:
    """A single Gaussian N(mean, diag(std^2)) as a one-component mixture."""
    mean = np.atleast_1d(np.asarray(mean, np.float32))
    std = np.broadcast_to(np.asarray(std, np.float32), mean.shape)
    return GaussianMixture(np.ones(1), mean[None], std[None])


def random_mixture(dim: int, num_modes: int = 8, *, seed: int = 0, spread: float = 1.0) -> GaussianMixture:
    """Means ~ N(0, spread^2 I) (fixed by `seed`), isotropic stds in [0.2, 0.5], Dirichlet(5) weights."""
    rng = np.random.default_rng(seed)
    means = spread * rng.standard_normal((num_modes, dim))
    stds = rng.uniform(0.2, 0.5, num_modes)
    weights = rng.dirichlet(np.full(num_modes, 5.0))
    return GaussianMixture(weights, means, stds)
