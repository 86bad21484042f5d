"""Loss weightings as functions of the log-SNR, and EDM2's learned uncertainty weighting.

Kingma & Gao 2023 ("Understanding diffusion objectives as the ELBO with simple data augmentation", sec. 2
and table 1) write every denoising loss of a process x_t = alpha x_0 + sigma eps as one weighting w of the
log-SNR lambda = log(alpha^2 / sigma^2):

  L_w(x) = 1/2 int w(lambda) E_eps || eps_hat(z_lambda; lambda) - eps ||^2 d lambda
         = 1/2 (T - t_min) E_{t ~ U[t_min, T]} [ w(lambda_t) abs(d lambda/dt) || eps_hat - eps ||^2 ].

The loss is taken on eps after converting the network's prediction (`gl_jax.parametrization`), so a
weighting is one function of lambda whatever the network predicts (eps, x0, v or score), and the
process enters only through abs(d lambda/dt) = g(t)^2 / sigma(t)^2 (`log_snr_rate`). With t ~ U the factor on
each example's || eps_hat - eps ||^2 is `weighting(sde, t)` = w(lambda) abs(d lambda/dt) (the constant
T - t_min and the 1/2 are dropped, as they always were here).

Time sampling vs weighting. The density of lambda under the time sampling multiplies in: drawing t so that
lambda has density p(lambda), without an importance weight, and putting a factor f(lambda) on each
example's eps loss is the weighting w(lambda) = p(lambda) f(lambda). Several published losses are defined
that way, by a per-example factor together with their own time distribution: the plain eps loss (f = 1,
Ho et al. 2020), EDM's loss (f = (e^-lambda + s_d^2) / s_d^2 with its log-normal sigma, Karras et al. 2022)
and min-SNR-gamma (f = min(SNR, gamma) / SNR with uniform t, Hang et al. 2023). They are
`PerExampleWeighting`s: `w(lam, density)` is density * f(lam), their w depends on the schedule and
sampling (e.g. the eps loss with uniform t on the cosine schedule is w = sech(lambda / 2) / (2 pi), Kingma
& Gao table 1). The others are `LogSNRWeighting`s, a fixed w(lambda) whatever the schedule: the ELBO
(w = 1), the sigmoid weighting and flow matching. The time samplings in `gl_jax.losses.score` that carry an
importance weight (`UniformTimes`, `LogSNRTimes`) all stand for uniform t, so there
p(lambda) = 1 / ((T - t_min) abs(d lambda/dt)) (`uniform_log_snr_density`); EDM's `LogNormalTimes` does not
reweight, so its own density p(lambda) = N(lambda; -2 p_mean, (2 p_std)^2) multiplies in.

Weightings (`WEIGHTINGS` names):

- "sigma2" `Sigma2Weighting`: f = 1, the eps loss (Ho et al. 2020, eq. 14).
- "likelihood" / "elbo" `LikelihoodWeighting`: w = 1. One objective under two names: lambda(t) = g^2 on
  the score loss (Song et al. 2021b, thm. 1) is g^2 / sigma^2 = abs(d lambda/dt) on the eps loss, the
  continuous-time ELBO's diffusion term (Kingma et al. 2021, eq. 17; Kingma & Gao 2023, sec. 3).
- "edm" `EDMWeighting`: f = (e^-lambda + s_d^2) / s_d^2 (Karras et al. 2022, eq. 8 and table 1, with
  s^2 = sigma^2 / alpha^2 = e^-lambda).
- "min_snr" `MinSNRWeighting`: f = min(SNR, gamma) / SNR (Hang et al. 2023, sec. 3, written on the eps
  loss). On a variance-preserving process the same loss on v is min(SNR, gamma) / (SNR + 1) || v_hat - v ||^2
  and on x0 it is min(SNR, gamma) || x0_hat - x0 ||^2 (the form the paper's code uses for v, and
  diffusers issue #5654's correction of min(SNR + 1, gamma) / (SNR + 1)).
- "sigmoid" `SigmoidWeighting`: w = sigmoid(b - lambda) (Kingma & Gao 2023, sec. 5; Hoogeboom et al. 2024,
  SiD2, sec. 3), monotone, so the loss is an ELBO under Gaussian noise augmentation (Kingma & Gao, thm. 1).
- "flow_matching" `FlowMatchingWeighting`: w = e^(-lambda / 2) / 2, the rectified-flow velocity loss
  || u_hat - u ||^2 with u = eps - x_0 (Lipman et al. 2023; Liu et al. 2023) when t ~ U on
  `RectifiedFlow` (Kingma & Gao 2023, table 1 lists it as e^(-lambda / 2) up to the constant).

EDM2's learned weighting (Karras et al. 2024, "Analyzing and improving the training dynamics of diffusion
models", sec. 5, "loss weighting"): a tiny network u(lambda) (`UncertaintyWeight`) trained with

  L = E [ w / e^u(lambda) || eps_hat - eps ||^2 + u(lambda) ],

whose minimiser in u is e^u(lambda) = E[w || eps_hat - eps ||^2 | lambda], so every noise level's loss is
normalised to about 1 (the loss wrapper is `gl_jax.losses.score.uncertainty_weighted_score_matching`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.registry import Registry
from gl_jax.sde import GaussianDiffusion

__all__ = [
    "Weighting",
    "LogSNRWeighting",
    "PerExampleWeighting",
    "Sigma2Weighting",
    "LikelihoodWeighting",
    "EDMWeighting",
    "MinSNRWeighting",
    "SigmoidWeighting",
    "FlowMatchingWeighting",
    "WEIGHTINGS",
    "UncertaintyWeight",
    "log_snr_rate",
    "uniform_log_snr_density",
]


def log_snr_rate(sde: GaussianDiffusion, t: jax.Array) -> jax.Array:
    """abs(d lambda/dt) = -d log-SNR/dt at times `t` `[B]`: `[B]`.

    For lambda = 2 log alpha - 2 log sigma and g^2 = d sigma^2/dt - 2 f sigma^2 with f = d log alpha/dt,
    g^2 / sigma^2 = 2 sigma'/sigma - 2 f = -d lambda/dt (Kingma et al. 2021, eq. 17; Song et al. 2021b),
    so it comes from each process's closed-form g^2 for every process.
    """
    return sde.g2(t) / sde.sigma(t) ** 2


def uniform_log_snr_density(sde: GaussianDiffusion, t: jax.Array) -> jax.Array:
    """p(lambda) at lambda(t) for t ~ U[t_min, T]: 1 / ((T - t_min) abs(d lambda/dt)), `[B]`."""
    return 1.0 / ((sde.T - sde.t_min) * log_snr_rate(sde, t))


class Weighting(abc.ABC):
    """A loss weighting w(lambda) of the eps loss (Kingma & Gao 2023, sec. 2).

    `weighting(sde, t)` `[B]` is the factor on each example's || eps_hat - eps ||^2 at times `t` `[B]` drawn
    uniformly (or importance-weighted back to uniform); `weighting.w(lam, density)` is Kingma & Gao's
    w(lambda), given the density p(lambda) of lambda under the time sampling (which only the
    per-example weightings use).
    """

    @abc.abstractmethod
    def w(self, lam: jax.Array, density: jax.Array) -> jax.Array:
        """w(lambda) at log-SNRs `lam`, for lambda drawn with density `density` (same shape)."""

    @abc.abstractmethod
    def __call__(self, sde: GaussianDiffusion, t: jax.Array) -> jax.Array:
        """The factor `[B]` on each example's eps loss at times `t` `[B]`."""


class LogSNRWeighting(Weighting):
    """A fixed w(lambda); its per-example factor for uniform t is w(lambda) abs(d lambda/dt)."""

    @abc.abstractmethod
    def weight(self, lam: jax.Array) -> jax.Array:
        """w(lambda), shaped like `lam`."""

    def w(self, lam, density):
        del density  # A fixed weighting does not depend on how lambda is sampled.
        return self.weight(lam)

    def __call__(self, sde, t):
        return self.weight(sde.log_snr(t)) * log_snr_rate(sde, t)


class PerExampleWeighting(Weighting):
    """A factor f(lambda) on each example's eps loss; its w(lambda) = p(lambda) f(lambda) includes the
    time sampling's density (Kingma & Gao 2023, sec. 2.3)."""

    @abc.abstractmethod
    def factor(self, lam: jax.Array) -> jax.Array:
        """f(lambda), shaped like `lam`."""

    def w(self, lam, density):
        return density * self.factor(lam)

    def __call__(self, sde, t):
        return self.factor(sde.log_snr(t))


@dataclasses.dataclass(frozen=True)
class Sigma2Weighting(PerExampleWeighting):
    """f = 1: the plain eps loss, lambda(t) = sigma^2 on the score loss (Ho et al. 2020, eq. 14)."""

    def factor(self, lam):
        return jnp.ones_like(lam)


@dataclasses.dataclass(frozen=True)
class LikelihoodWeighting(LogSNRWeighting):
    """w = 1: the continuous-time ELBO (Kingma et al. 2021, eq. 17), g^2 on the score loss (Song et al.
    2021b, thm. 1); the factor is g^2 / sigma^2 = abs(d lambda/dt). Registered as "likelihood" and "elbo"."""

    def weight(self, lam):
        return jnp.ones_like(lam)


@dataclasses.dataclass(frozen=True)
class EDMWeighting(PerExampleWeighting):
    """f = (e^-lambda + s_d^2) / s_d^2, EDM's denoiser weighting (Karras et al. 2022, eq. 8, table 1).

    EDM weights || D - x_0 ||^2 by (s^2 + s_d^2) / (s s_d)^2, s = sigma / alpha; on the eps loss
    (|| D - x_0 ||^2 = s^2 || eps_hat - eps ||^2) that is (s^2 + s_d^2) / s_d^2 with s^2 = e^-lambda.
    With EDM's log-normal sigma the weighting is N(lambda; 2.4, 2.4^2) (e^-lambda + s_d^2) / s_d^2 (Kingma &
    Gao 2023, table 1).

    Attributes:
      sigma_data: the data's standard deviation s_d (0.5 for images in [-1, 1]).
    """

    sigma_data: float = 0.5

    def factor(self, lam):
        return (jnp.exp(-lam) + self.sigma_data**2) / self.sigma_data**2


@dataclasses.dataclass(frozen=True)
class MinSNRWeighting(PerExampleWeighting):
    """f = min(SNR, gamma) / SNR = min(1, gamma e^-lambda) (Hang et al. 2023, "Efficient diffusion training
    via Min-SNR weighting strategy", sec. 3, written on the eps loss).

    The same objective whatever the network predicts: min(SNR, gamma) on the x0 loss, and on a
    variance-preserving process min(SNR, gamma) / (SNR + 1) on the v loss (|| v_hat - v ||^2 =
    || eps_hat - eps ||^2 / alpha^2 and 1 / alpha^2 = (SNR + 1) / SNR).

    Attributes:
      gamma: the clip on the SNR (5 in the paper).
    """

    gamma: float = 5.0

    def factor(self, lam):
        return jnp.minimum(1.0, self.gamma * jnp.exp(-lam))


@dataclasses.dataclass(frozen=True)
class SigmoidWeighting(LogSNRWeighting):
    """w = sigmoid(b - lambda) (Kingma & Gao 2023, sec. 5; Hoogeboom et al. 2024, SiD2, sec. 3).

    About 1 at low SNR (lambda << b, where it is the ELBO's weight) and e^(b - lambda) at high SNR; the
    weight halves at lambda = b. Monotone in lambda, so the loss is an ELBO of noise-augmented data
    (Kingma & Gao 2023, thm. 1).

    Attributes:
      bias: b, the log-SNR where the weight is 1/2 (shift it with the data's resolution).
    """

    bias: float = 2.0

    def weight(self, lam):
        return jax.nn.sigmoid(self.bias - lam)


@dataclasses.dataclass(frozen=True)
class FlowMatchingWeighting(LogSNRWeighting):
    """w = e^(-lambda / 2) / 2: conditional flow matching's velocity loss || u_hat - u ||^2, u = eps - x_0,
    with t ~ U on the linear interpolant (`gl_jax.sde.RectifiedFlow`; Lipman et al. 2023, sec. 4.1; Kingma &
    Gao 2023, table 1).

    On RectifiedFlow, abs(d lambda/dt) = 2 / (t (1 - t)) and e^(-lambda / 2) = t / (1 - t), so the factor is
    1 / (1 - t)^2 = 1 / alpha^2, and u_hat - u = (eps_hat - eps) / alpha.
    """

    def weight(self, lam):
        return 0.5 * jnp.exp(-0.5 * lam)


# Names a config may use for `config.loss.weighting`.
WEIGHTINGS = Registry(
    "weighting",
    {
        "sigma2": Sigma2Weighting,
        "likelihood": LikelihoodWeighting,
        "elbo": LikelihoodWeighting,
        "edm": EDMWeighting,
        "min_snr": MinSNRWeighting,
        "sigmoid": SigmoidWeighting,
        "flow_matching": FlowMatchingWeighting,
    },
)


class UncertaintyWeight(nn.Module):
    """u(lambda), EDM2's learned log-variance of the loss at each noise level (Karras et al. 2024, sec. 5).

    EDM2 feeds c_noise = ln(sigma) / 4 to fixed random Fourier features (`MPFourier`: cos(2 pi (f c + phi))
    sqrt(2), f ~ N(0, 1), phi ~ U[0, 1]) and a linear layer to one output. Here c = -lambda / 8 (that is
    ln(sigma / alpha) / 4, the same for alpha = 1), so u is one function of the noise level for every
    process. The features are fixed by `seed` (constants, not parameters), and the last layer starts at
    zero, so training starts from the unweighted loss (e^u = 1).

    Attributes:
      features: number of Fourier features (EDM2: 128).
      hidden: widths of optional SiLU hidden layers between the features and the output (EDM2: none).
      seed: seed of the fixed frequencies and phases.
    """

    features: int = 128
    hidden: Sequence[int] = ()
    seed: int = 0

    @nn.compact
    def __call__(self, lam: jax.Array) -> jax.Array:
        """u at log-SNRs `lam` `[B]`: `[B]`."""
        rng = np.random.default_rng(self.seed)
        freqs = jnp.asarray(rng.standard_normal(self.features), jnp.float32)  # [F]
        phases = jnp.asarray(rng.uniform(size=self.features), jnp.float32)  # [F]
        c = -lam / 8.0  # [B]
        h = jnp.sqrt(2.0) * jnp.cos(2.0 * jnp.pi * (c[:, None] * freqs + phases))  # [B, F]
        for width in self.hidden:
            h = nn.silu(nn.Dense(width)(h))
        return nn.Dense(1, kernel_init=nn.initializers.zeros)(h)[:, 0]
