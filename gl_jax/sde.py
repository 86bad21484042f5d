"""Forward diffusion processes.

Every Gaussian diffusion used here has marginals x_t = alpha(t) x_0 + sigma(t) eps with eps ~ N(0, I).
The base class derives everything else from alpha and sigma (Kingma et al. 2021, "Variational Diffusion
Models", eq. 1-3; Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 5):

  drift coefficient     f(t) = d log alpha / dt                      (dx = f(t) x dt + g(t) dw)
  squared diffusion     g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2
  log signal-to-noise   lambda(t) = log(alpha^2 / sigma^2)

Concrete processes override these with closed forms where they have them; the generic versions use
forward-mode autodiff of alpha and sigma, so a new schedule only needs `alpha` and `sigma`. Time `t` is a
`[B]` array throughout; per-example coefficients come back shaped `[B]`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "GaussianDiffusion",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "EDMSDE",
    "RectifiedFlow",
    "DiscreteDDPM",
    "LearnedSchedule",
    "broadcast_to_data",
]


def broadcast_to_data(v: jax.Array, x: jax.Array) -> jax.Array:
    """Reshapes a per-example `[B]` array so it broadcasts against data `[B, ...]`."""
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


class GaussianDiffusion(abc.ABC):
    """A diffusion x_t = alpha(t) x_0 + sigma(t) eps on t in [t_min, T], with a standard-normal-like prior.

    Subclasses define `alpha(t)` and `sigma(t)`; everything else follows. Concrete processes are frozen
    dataclasses, so equal settings compare equal and can be static arguments of `jax.jit`.

    Attributes:
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

    def f(self, t: jax.Array) -> jax.Array:
        """Drift coefficient f(t) = d log alpha(t) / dt, shaped like `t`."""
        _, dalpha = jax.jvp(self.alpha, (t,), (jnp.ones_like(t),))
        return dalpha / self.alpha(t)

    def g2(self, t: jax.Array) -> jax.Array:
        """Squared diffusion coefficient g(t)^2 = d sigma^2/dt - 2 f(t) sigma^2, shaped like `t`."""
        sigma, dsigma = jax.jvp(self.sigma, (t,), (jnp.ones_like(t),))
        return 2.0 * sigma * dsigma - 2.0 * self.f(t) * sigma**2

    def marginal(self, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and std of p(x_t | x_0) for clean data `x0` `[B, ...]` at times `t` `[B]`: `mean` shaped
        like `x0`, `std` shaped `[B, 1, ..., 1]` (broadcastable to `x0`)."""
        return broadcast_to_data(self.alpha(t), x0) * x0, broadcast_to_data(self.sigma(t), x0)

    def drift_diffusion(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Drift f(t) x (shaped like `x`) and diffusion g(t) (shaped `[B]`) of the forward SDE."""
        return broadcast_to_data(self.f(t), x) * x, jnp.sqrt(self.g2(t))

    def reverse_drift(self, x, t, score, *, probability_flow: bool) -> jax.Array:
        """Drift of the reverse-time SDE, f(t) x - g(t)^2 score (Anderson 1982; Song et al. 2021, eq. 6), or
        with `probability_flow` of the probability-flow ODE, f(t) x - 1/2 g(t)^2 score (Song et al. 2021,
        eq. 13). `x` and `score` are `[B, ...]`, `t` is `[B]`; returns an array shaped like `x`."""
        drift, g = self.drift_diffusion(x, t)
        return drift - (0.5 if probability_flow else 1.0) * broadcast_to_data(g, x) ** 2 * score

    def log_snr(self, t: jax.Array) -> jax.Array:
        """log(alpha^2 / sigma^2), decreasing in t."""
        return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))

    def t_from_log_snr(self, log_snr: jax.Array) -> jax.Array:
        """Inverse of `log_snr` (generic: bisection to float precision; closed forms override it)."""
        lo, hi = jnp.zeros_like(log_snr), jnp.full_like(log_snr, self.T)

        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            # log_snr is decreasing: a larger value than the target means mid is too early.
            too_early = self.log_snr(mid) > log_snr
            return jnp.where(too_early, mid, lo), jnp.where(too_early, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 60, body, (lo, hi))
        return 0.5 * (lo + hi)

    def timesteps(self) -> jax.Array | None:
        """The process's discrete levels `[N]` for discrete-time training, or None in continuous time."""
        return None

    def prior_std(self) -> jax.Array:
        """Standard deviation of the prior N(0, prior_std^2 I): sigma(T), alpha(T) x_0 taken as negligible."""
        return self.sigma(jnp.asarray(self.T, jnp.float32))

    def prior_sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """A sample of the prior N(0, prior_std^2 I), shaped `shape`."""
        return self.prior_std() * jax.random.normal(key, shape)

    def prior_logp(self, z: jax.Array) -> jax.Array:
        """Log-density of the prior at `z` `[B, ...]`, summed over data dimensions: `[B]`."""
        sigma_t = self.prior_std()
        d = math.prod(z.shape[1:])
        sq = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=-1)
        return -0.5 * d * jnp.log(2.0 * jnp.pi * sigma_t**2) - 0.5 * sq / sigma_t**2


class _VariancePreserving(GaussianDiffusion):
    """alpha^2 + sigma^2 = 1, from log alpha(t) (`_log_alpha`); the prior N(0, I) is the stationary one."""

    @abc.abstractmethod
    def _log_alpha(self, t: jax.Array) -> jax.Array: ...

    def alpha(self, t):
        return jnp.exp(self._log_alpha(t))

    def sigma(self, t):
        # -expm1(2 log alpha) = 1 - alpha^2 without cancellation at small t.
        return jnp.sqrt(-jnp.expm1(2.0 * self._log_alpha(t)))

    def log_snr(self, t):
        two_log_alpha = 2.0 * self._log_alpha(t)
        return two_log_alpha - jnp.log(-jnp.expm1(two_log_alpha))

    def prior_std(self):
        return jnp.asarray(1.0)


class _UnitAlpha(GaussianDiffusion):
    """alpha = 1 and f = 0: the variance-exploding processes x_t = x_0 + sigma(t) eps."""

    def alpha(self, t):
        return jnp.ones_like(t)

    def f(self, t):
        return jnp.zeros_like(t)

    def log_snr(self, t):
        return -2.0 * jnp.log(self.sigma(t))


@dataclasses.dataclass(frozen=True)
class VPSDE(_VariancePreserving):
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
            raise ValueError(f"VPSDE needs 0 < beta_min < beta_max, got {self.beta_min=}, {self.beta_max=}.")

    def beta(self, t: jax.Array) -> jax.Array:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_alpha(self, t: jax.Array) -> jax.Array:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t)

    def t_from_log_snr(self, log_snr):
        # alpha^2 = sigmoid(lambda)  =>  1/2 (b1 - b0) t^2 + b0 t + log_sigmoid(lambda) = 0.
        delta = self.beta_max - self.beta_min
        c = jax.nn.log_sigmoid(log_snr)
        return (-self.beta_min + jnp.sqrt(self.beta_min**2 - 2.0 * delta * c)) / delta


@dataclasses.dataclass(frozen=True)
class SubVPSDE(VPSDE):
    """Sub-VP SDE dx = -1/2 beta x dt + sqrt(beta (1 - exp(-2 int_0^t beta))) dw (Song et al. 2021, eq. 12).

    Same mean as the VP SDE, variance bounded by it: sigma(t) = 1 - alpha(t)^2.
    """

    def sigma(self, t):
        return -jnp.expm1(2.0 * self._log_alpha(t))

    def g2(self, t):
        return self.beta(t) * -jnp.expm1(4.0 * self._log_alpha(t))

    def log_snr(self, t):
        two_log_alpha = 2.0 * self._log_alpha(t)
        return two_log_alpha - 2.0 * jnp.log(-jnp.expm1(two_log_alpha))

    def t_from_log_snr(self, log_snr):
        # SNR = a / (1 - a)^2 = e^lambda with a = alpha^2; the root in (0, 1) is a = 4e / (1 + r)^2 with
        # r = sqrt(1 + 4e), so the VP log-SNR log(a / (1 - a)) = log 2 + lambda - log(1 + r).
        r = jnp.sqrt(1.0 + 4.0 * jnp.exp(log_snr))
        return VPSDE.t_from_log_snr(self, math.log(2.0) + log_snr - jnp.log1p(r))


@dataclasses.dataclass(frozen=True)
class VESDE(_UnitAlpha):
    """Variance-exploding SDE dx = sqrt(d sigma^2/dt) dw with sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    Song et al. 2021, eq. 9 (NCSN's geometric noise levels in continuous time); g^2 = 2 sigma(t)^2
    log(sigma_max / sigma_min); the prior is N(0, sigma_max^2 I). `timesteps()` gives NCSN's `num_scales`
    levels (Song & Ermon 2019), for discrete-time training as score_sde's non-continuous VE configs.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: float = 1e-5
    num_scales: int = 1000

    def timesteps(self) -> jax.Array:
        """`[num_scales]` times i / (num_scales - 1): sigma geometric from sigma_min to sigma_max."""
        return jnp.linspace(0.0, 1.0, self.num_scales, dtype=jnp.float32)

    def __post_init__(self):
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"VESDE needs 0 < sigma_min < sigma_max, got {self.sigma_min=}, {self.sigma_max=}."
            )

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def g2(self, t):
        return 2.0 * self.sigma(t) ** 2 * math.log(self.sigma_max / self.sigma_min)

    def t_from_log_snr(self, log_snr):
        return (-0.5 * log_snr - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)


@dataclasses.dataclass(frozen=True)
class EDMSDE(_UnitAlpha):
    """EDM's process x_t = x_0 + t eps, t = sigma in [sigma_min, sigma_max] (Karras et al. 2022, eq. 4 with
    s(t) = 1, sigma(t) = t): f = 0, g^2 = 2t. The prior is N(0, sigma_max^2 I).
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    @property
    def T(self) -> float:
        return self.sigma_max

    @property
    def t_min(self) -> float:
        return self.sigma_min

    def sigma(self, t):
        return t

    def g2(self, t):
        return 2.0 * t

    def t_from_log_snr(self, log_snr):
        return jnp.exp(-0.5 * log_snr)


@dataclasses.dataclass(frozen=True)
class RectifiedFlow(GaussianDiffusion):
    """The linear interpolant x_t = (1 - t) x_0 + t eps (Liu et al. 2023; Lipman et al. 2023).

    f(t) = -1 / (1 - t), g^2 = 2t / (1 - t). Both blow up at t = 1, so the process stops at T < 1
    (default 0.999, where x_T is N(0.001 x_0, 0.999^2 I)); the prior is N(0, I).
    """

    T: float = 0.999
    t_min: float = 1e-3

    def alpha(self, t):
        return 1.0 - t

    def sigma(self, t):
        return t

    def f(self, t):
        return -1.0 / (1.0 - t)

    def g2(self, t):
        return 2.0 * t / (1.0 - t)

    def log_snr(self, t):
        return 2.0 * (jnp.log1p(-t) - jnp.log(t))

    def t_from_log_snr(self, log_snr):
        return jax.nn.sigmoid(-0.5 * log_snr)

    def prior_std(self):
        return jnp.asarray(1.0)


@dataclasses.dataclass(frozen=True)
class DiscreteDDPM(_VariancePreserving):
    """A discrete DDPM beta schedule on t_n = n / N, n = 0..N, as a diffusion in continuous t.

    alpha(t_n)^2 = prod_{i <= n} (1 - beta_i) exactly at the grid; between grid points log alpha is
    interpolated linearly, so samplers and ODEs can use any t. `timesteps()` gives the grid for the
    discrete-time loss (Ho et al. 2020) and ancestral sampling.

    Attributes:
      schedule: "linear" (beta from `beta_start` to `beta_end`, Ho et al. 2020) or "cosine"
        (Nichol & Dhariwal 2021, offset `cosine_s`).
      num_steps: N.
    """

    schedule: str = "linear"
    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cosine_s: float = 0.008

    def __post_init__(self):
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"Unknown DDPM schedule {self.schedule!r}; choose 'linear' or 'cosine'.")

    @property
    def t_min(self) -> float:
        return 1.0 / self.num_steps

    def betas(self) -> np.ndarray:
        """`[N]` betas (float64)."""
        if self.schedule == "linear":  # Ho et al. 2020, sec. 4.
            return np.linspace(self.beta_start, self.beta_end, self.num_steps, dtype=np.float64)
        # Nichol & Dhariwal 2021, eq. 17, betas clipped at 0.999.
        n = np.arange(self.num_steps + 1, dtype=np.float64) / self.num_steps
        abar = np.cos((n + self.cosine_s) / (1 + self.cosine_s) * np.pi / 2) ** 2
        return np.clip(1.0 - abar[1:] / abar[:-1], 0.0, 0.999)

    def alphas_cumprod(self) -> np.ndarray:
        """`[N]` alpha-bar_n = prod_{i <= n} (1 - beta_i), n = 1..N (float64)."""
        return np.cumprod(1.0 - self.betas())

    def timesteps(self) -> jax.Array:
        """`[N]` times t_n = n / N, n = 1..N."""
        return jnp.arange(1, self.num_steps + 1, dtype=jnp.float32) / self.num_steps

    def _log_alpha(self, t):
        log_alpha = 0.5 * np.log(self.alphas_cumprod())  # [N]
        grid = jnp.asarray(np.concatenate([[0.0], log_alpha]), jnp.float32)  # [N + 1]
        pos = jnp.clip(t * self.num_steps, 0.0, self.num_steps)
        lo = jnp.clip(jnp.floor(pos), 0, self.num_steps - 1).astype(jnp.int32)
        w = pos - lo
        return (1.0 - w) * grid[lo] + w * grid[lo + 1]


@dataclasses.dataclass(frozen=True)
class LearnedSchedule(GaussianDiffusion):
    """A variance-preserving diffusion with a learned gamma(t) = -log SNR(t) (Kingma et al. 2021, eq. 3):
    alpha^2 = sigmoid(-gamma), sigma^2 = sigmoid(gamma).

    Library-only: for researchers' own VDM-style code (with `gl_jax.losses.score.vdm_elbo`); no config
    or family builds it.

    Attributes:
      gamma: `gamma(t) -> [B]`, increasing; e.g. `lambda t: MonotoneGamma().apply(params, t)` with
        `gl_jax.models.schedule.MonotoneGamma`.
    """

    gamma: Callable[[jax.Array], jax.Array]
    t_min: float = 0.0

    def alpha(self, t):
        return jnp.sqrt(jax.nn.sigmoid(-self.gamma(t)))

    def sigma(self, t):
        return jnp.sqrt(jax.nn.sigmoid(self.gamma(t)))

    def log_snr(self, t):
        return -self.gamma(t)

    def prior_std(self):
        return jnp.asarray(1.0)
