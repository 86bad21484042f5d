"""Forward diffusion processes.

Every Gaussian diffusion used here has marginals x_t = alpha(t) x_0 + sigma(t) eps with eps ~ N(0, I).
The base class derives everything else from alpha and sigma (Kingma et al. 2021, "Variational Diffusion
Models", eq. 1-3; Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 5):

  drift coefficient     f(t) = d log alpha / dt                      (dx = f(t) x dt + g(t) dw)
  squared diffusion     g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2
  log signal-to-noise   lambda(t) = log(alpha^2 / sigma^2)

Concrete processes override these with closed forms where they have them; the generic versions use
forward-mode autodiff of alpha and sigma, so a new schedule only needs `alpha` and `sigma`.

Time `t` is a `[B]` array throughout; per-example coefficients come back shaped `[B]`.
"""

from __future__ import annotations

import abc
import dataclasses
import math

import jax
import jax.numpy as jnp

__all__ = ["GaussianDiffusion", "VPSDE", "broadcast_to_data"]


def broadcast_to_data(v: jax.Array, x: jax.Array) -> jax.Array:
    """Reshapes a per-example `[B]` array so it broadcasts against data `[B, ...]`."""
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


class GaussianDiffusion(abc.ABC):
    """A diffusion x_t = alpha(t) x_0 + sigma(t) eps on t in [t_min, T], with a standard-normal-like prior.

    Subclasses define `alpha(t)` and `sigma(t)`; everything else follows. Concrete processes are frozen
    dataclasses, so equal settings compare equal and can be static arguments of `jax.jit`. Attributes:
      T: final time, where x_T is (close to) the prior.
      t_min: smallest time used for training and where samplers stop (avoids the singular score at t=0).
    """

    T: float = 1.0
    t_min: float = 1e-3

    @abc.abstractmethod
    def alpha(self, t: jax.Array) -> jax.Array:
        """Signal scale alpha(t), shaped like `t`."""

    @abc.abstractmethod
    def sigma(self, t: jax.Array) -> jax.Array:
        """Noise scale sigma(t), shaped like `t`."""

    # --- Derived quantities (generic; subclasses may override with closed forms). ---

    def f(self, t: jax.Array) -> jax.Array:
        """Drift coefficient f(t) = d log alpha(t) / dt, shaped like `t`."""
        _, dalpha = jax.jvp(self.alpha, (t,), (jnp.ones_like(t),))
        return dalpha / self.alpha(t)

    def g2(self, t: jax.Array) -> jax.Array:
        """Squared diffusion coefficient g(t)^2 = d sigma^2/dt - 2 f(t) sigma^2, shaped like `t`."""
        sigma, dsigma = jax.jvp(self.sigma, (t,), (jnp.ones_like(t),))
        return 2.0 * sigma * dsigma - 2.0 * self.f(t) * sigma**2

    def marginal(self, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and std of p(x_t | x_0).

        Args:
          x0: clean data `[B, ...]`.
          t: times `[B]`.

        Returns:
          `(mean, std)`: `mean` shaped like `x0`, `std` shaped `[B, 1, ..., 1]` (broadcastable to `x0`).
        """
        return broadcast_to_data(self.alpha(t), x0) * x0, broadcast_to_data(self.sigma(t), x0)

    def drift_diffusion(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Drift f(t) x (shaped like `x`) and diffusion g(t) (shaped `[B]`) of the forward SDE."""
        return broadcast_to_data(self.f(t), x) * x, jnp.sqrt(self.g2(t))

    def log_snr(self, t: jax.Array) -> jax.Array:
        """log(alpha^2 / sigma^2), decreasing in t."""
        return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))

    def t_from_log_snr(self, log_snr: jax.Array) -> jax.Array:
        """Inverse of `log_snr` (generic: bisection to float precision; closed forms override it)."""
        lo = jnp.full_like(log_snr, 0.0)
        hi = jnp.full_like(log_snr, self.T)

        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            # log_snr is decreasing: a larger value than the target means mid is too early.
            too_early = self.log_snr(mid) > log_snr
            return jnp.where(too_early, mid, lo), jnp.where(too_early, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 60, body, (lo, hi))
        return 0.5 * (lo + hi)

    def prior_sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """A sample of the prior N(0, sigma(T)^2 I) (alpha(T) x_0 is taken as negligible)."""
        return self.sigma(jnp.asarray(self.T)) * jax.random.normal(key, shape)

    def prior_logp(self, z: jax.Array) -> jax.Array:
        """Log-density of the prior at `z` `[B, ...]`, summed over data dimensions: `[B]`."""
        sigma_t = self.sigma(jnp.asarray(self.T))
        d = math.prod(z.shape[1:])
        sq = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=-1)
        return -0.5 * d * jnp.log(2.0 * jnp.pi * sigma_t**2) - 0.5 * sq / sigma_t**2


@dataclasses.dataclass(frozen=True)
class VPSDE(GaussianDiffusion):
    """Variance-preserving SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw (Song et al. 2021, eq. 11).

    beta(t) = beta_min + t (beta_max - beta_min) is the continuous limit of DDPM's linear schedule
    (Ho et al. 2020) with 1000 steps from 1e-4 to 0.02, hence the defaults 0.1 and 20.

      log alpha(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min,   sigma(t) = sqrt(1 - alpha(t)^2).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3

    def __post_init__(self):
        if not 0.0 < self.beta_min < self.beta_max:
            raise ValueError(
                f"VPSDE needs 0 < beta_min < beta_max, got {self.beta_min=}, {self.beta_max=}."
            )

    def beta(self, t: jax.Array) -> jax.Array:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_alpha(self, t: jax.Array) -> jax.Array:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):
        return jnp.exp(self._log_alpha(t))

    def sigma(self, t):
        # -expm1(2 log alpha) = 1 - alpha^2 without cancellation at small t.
        return jnp.sqrt(-jnp.expm1(2.0 * self._log_alpha(t)))

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t)

    def log_snr(self, t):
        two_log_alpha = 2.0 * self._log_alpha(t)
        return two_log_alpha - jnp.log(-jnp.expm1(two_log_alpha))

    def t_from_log_snr(self, log_snr):
        # alpha^2 = sigmoid(lambda)  =>  1/2 (b1 - b0) t^2 + b0 t + log_sigmoid(lambda) = 0.
        delta = self.beta_max - self.beta_min
        c = jax.nn.log_sigmoid(log_snr)
        return (-self.beta_min + jnp.sqrt(self.beta_min**2 - 2.0 * delta * c)) / delta

    def prior_sample(self, key, shape):
        return jax.random.normal(key, shape)

    def prior_logp(self, z):
        d = math.prod(z.shape[1:])
        sq = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=-1)
        return -0.5 * d * jnp.log(2.0 * jnp.pi) - 0.5 * sq
