"""Conversions between what a denoising network may predict, and EDM preconditioning.

For x_t = alpha x_0 + sigma eps (Kingma et al. 2021, eq. 1):
  score = -eps / sigma                                  (Vincent 2011; Song et al. 2021, sec. 3.3)
  x_0   = (x_t - sigma eps) / alpha                     (the denoiser D(x_t) = E[x_0 | x_t])
  v     = alpha eps - sigma x_0                         (Salimans & Ho 2022, sec. 4, for any alpha, sigma)
and back: eps = (alpha v + sigma x_t) / (alpha^2 + sigma^2),
          x_0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2).

`alpha` and `sigma` must broadcast against `x_t` (use `gl_jax.sde.broadcast_to_data`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gl_jax.registry import Registry

__all__ = ["PREDICTIONS", "Prediction", "to_eps", "from_eps", "convert", "denoised", "edm_preconditioning"]


class Prediction(NamedTuple):
    """One thing a network may predict: its maps to and from the noise eps at (x_t, alpha, sigma)."""

    to_eps: Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
    from_eps: Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


# Names a config may use for `config.loss.prediction`; every conversion looks its name up here, once.
PREDICTIONS = Registry(
    "prediction",
    {
        "eps": Prediction(lambda eps, x_t, a, s: eps, lambda eps, x_t, a, s: eps),
        "score": Prediction(lambda score, x_t, a, s: -s * score, lambda eps, x_t, a, s: -eps / s),
        "x0": Prediction(
            lambda x0, x_t, a, s: (x_t - a * x0) / s, lambda eps, x_t, a, s: (x_t - s * eps) / a
        ),
        "v": Prediction(
            lambda v, x_t, a, s: (a * v + s * x_t) / (a**2 + s**2),
            lambda eps, x_t, a, s: a * eps - s * ((x_t - s * eps) / a),
        ),
    },
)


def to_eps(pred: jax.Array, kind: str, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """The noise eps implied by a prediction of `kind` in `PREDICTIONS`."""
    return PREDICTIONS[kind].to_eps(pred, x_t, alpha, sigma)


def from_eps(eps: jax.Array, kind: str, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """The prediction of `kind` in `PREDICTIONS` implied by the noise eps."""
    return PREDICTIONS[kind].from_eps(eps, x_t, alpha, sigma)


def convert(
    pred: jax.Array, *, source: str, target: str, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array
) -> jax.Array:
    """Converts a prediction from `source` to `target` (both in `PREDICTIONS`) at (x_t, alpha, sigma)."""
    if source == target:
        return pred
    return from_eps(to_eps(pred, source, x_t, alpha, sigma), target, x_t, alpha, sigma)


def denoised(score: jax.Array, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """Tweedie's formula: the denoised estimate E[x_0 | x_t] = (x_t + sigma^2 score) / alpha (Efron 2011,
    "Tweedie's Formula and Selection Bias"; the `x0` prediction implied by a score).

    Args:
      score: the score at `x_t`, shaped like `x_t`.
      x_t: the noised data `[B, ...]`.
      alpha, sigma: signal and noise scales, broadcastable to `x_t`.
    """
    return (x_t + sigma**2 * score) / alpha


def edm_preconditioning(
    sigma: jax.Array, *, sigma_data: float = 0.5
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """EDM's preconditioning D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) (Karras et al. 2022, table 1).

    Args:
      sigma: noise levels (for alpha = 1), any shape.
      sigma_data: standard deviation of the data (0.5 for images in [-1, 1]).

    Returns:
      `(c_skip, c_out, c_in, c_noise)`, each shaped like `sigma`:
      c_skip = sigma_d^2 / (sigma^2 + sigma_d^2), c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2),
      c_in = 1 / sqrt(sigma^2 + sigma_d^2), c_noise = ln(sigma) / 4.
    """
    total = sigma**2 + sigma_data**2
    return (
        sigma_data**2 / total,
        sigma * sigma_data / jnp.sqrt(total),
        1.0 / jnp.sqrt(total),
        jnp.log(sigma) / 4.0,
    )
