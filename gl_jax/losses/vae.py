"""Variational autoencoder objectives: decoder likelihoods, the Gaussian KL, the ELBO and the IWAE bound.

With an encoder q(z|x) = N(mu, diag(sigma^2)), the prior p(z) = N(0, I) and a decoder p(x|z),

  ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x)        (Kingma & Welling 2014, eq. 3, 10)

  IWAE_K(x) = E[log 1/K sum_k p(x, z_k) / q(z_k|x)],  z_k ~ q(z|x)  (Burda et al. 2016, eq. 8)

with ELBO = IWAE_1 <= IWAE_K <= IWAE_{K+1} <= log p(x) (Burda et al. 2016, theorem 1).

Decoders (log-likelihoods per example, summed over dimensions, in nats):
  * `gaussian_log_prob`: a density for continuous (uniformly dequantized) data;
  * `discretized_logistic_log_prob`: the probability of each of `levels` pixel values under a mixture of
    logistics discretized into bins (Salimans et al. 2017, PixelCNN++, eq. 2), one per channel;
  * `bernoulli_log_prob`: binary data.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gl_jax import pixels

__all__ = [
    "gaussian_kl",
    "gaussian_log_prob",
    "standard_normal_log_prob",
    "discretized_logistic_log_prob",
    "bernoulli_log_prob",
    "elbo",
    "iwae_bound",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_per_example(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.reshape(x, (x.shape[0], -1)), axis=-1)  # [B]


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) per example, in nats.

    KL = 1/2 sum_i (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2) (Kingma & Welling 2014, appendix B).

    Args:
      mean, log_var: `[B, ...]`.

    Returns:
      `[B]`.
    """
    return 0.5 * _sum_per_example(jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
    """log N(x; mean, exp(log_scale)^2), summed over all but the leading axis: `[B, ...] -> [B]`."""
    z = (x - mean) * jnp.exp(-log_scale)
    return _sum_per_example(-0.5 * jnp.square(z) - log_scale - 0.5 * _LOG_2PI)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) per example, `[B, ...] -> [B]`."""
    return _sum_per_example(-0.5 * jnp.square(z) - 0.5 * _LOG_2PI)


def discretized_logistic_log_prob(
    k: jax.Array, logits: jax.Array, means: jax.Array, log_scales: jax.Array, *, levels: int
) -> jax.Array:
    """log P(k) under a mixture of discretized logistics per value, summed per example (PixelCNN++, eq. 2).

    Pixel value k in {0, ..., L - 1} sits at c_k = 2 k / (L - 1) - 1 in [-1, 1] with a bin of half-width
    h = 1 / (L - 1); the first and last bins reach to -inf and +inf, so the L probabilities sum to 1:

      P(k) = sum_m pi_m [sigmoid((c_k + h - mu_m) / s_m) - sigmoid((c_k - h - mu_m) / s_m)].

    The difference of sigmoids is evaluated as log sigmoid(a) - softplus(b) + log(1 - exp(b - a)), which
    is stable for any a > b (the form PixelCNN++ approximates by the density at the bin centre when the
    difference underflows).

    Args:
      k: integer values `[B, ...]`.
      logits: mixture logits `[B, ..., M]` (M = 1 for a single logistic).
      means: `[B, ..., M]` in data units ([-1, 1]).
      log_scales: `[B, ..., M]`.
      levels: L.

    Returns:
      `[B]` log-probabilities in nats.
    """
    half = 1.0 / (levels - 1)
    centre = pixels.to_signed(k, levels=levels)[..., None]  # [B, ..., 1]
    inv_s = jnp.exp(-log_scales)
    a = (centre + half - means) * inv_s  # Upper bin edge, standardised.
    b = (centre - half - means) * inv_s  # Lower bin edge.
    middle = jax.nn.log_sigmoid(a) - jax.nn.softplus(b) + jnp.log(-jnp.expm1(b - a))
    first = jax.nn.log_sigmoid(a)  # log P(value <= c_0 + h)
    last = -jax.nn.softplus(b)  # log P(value > c_{L-1} - h)
    kk = k[..., None]
    log_p = jnp.where(kk == 0, first, jnp.where(kk == levels - 1, last, middle))  # [B, ..., M]
    mixed = jax.nn.logsumexp(log_p + jax.nn.log_softmax(logits, axis=-1), axis=-1)  # [B, ...]
    return _sum_per_example(mixed)


def bernoulli_log_prob(b: jax.Array, logits: jax.Array) -> jax.Array:
    """log Bernoulli(b; sigmoid(logits)) summed per example; b in {0, 1}, `[B, ...] -> [B]`."""
    b = b.astype(jnp.float32)
    return _sum_per_example(b * jax.nn.log_sigmoid(logits) + (1.0 - b) * jax.nn.log_sigmoid(-logits))


def elbo(log_likelihood: jax.Array, kl: jax.Array, *, kl_weight: float = 1.0) -> jax.Array:
    """E_q[log p(x|z)] - kl_weight * KL (kl_weight = 1: the bound; beta-VAE otherwise, Higgins et al. 2017).

    Args:
      log_likelihood: one-sample estimates of E_q[log p(x|z)], `[B]`.
      kl: KL(q(z|x) || p(z)), `[B]`.

    Returns:
      `[B]`.
    """
    return log_likelihood - kl_weight * kl


def iwae_bound(log_weights: jax.Array) -> jax.Array:
    """log (1/K) sum_k w_k from log w_k = log p(x, z_k) - log q(z_k|x) (Burda et al. 2016, eq. 8).

    Args:
      log_weights: `[K, B]`.

    Returns:
      `[B]`; by Jensen's inequality never below the mean of the K log-weights (the ELBO estimate from the
      same samples).
    """
    return jax.nn.logsumexp(log_weights, axis=0) - math.log(log_weights.shape[0])
