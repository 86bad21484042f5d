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

import jax
import jax.numpy as jnp

__all__ = ["PREDICTIONS", "to_eps", "from_eps", "convert", "edm_preconditioning"]

PREDICTIONS = ("eps", "score", "x0", "v")


def to_eps(pred: jax.Array, kind: str, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """The noise eps implied by a prediction of `kind` in `PREDICTIONS`."""
    if kind == "eps":
        return pred
    if kind == "score":
        return -sigma * pred
    if kind == "x0":
        return (x_t - alpha * pred) / sigma
    if kind == "v":
        return (alpha * pred + sigma * x_t) / (alpha**2 + sigma**2)
    raise ValueError(f"Unknown prediction {kind!r}; choose one of {PREDICTIONS}.")


def from_eps(eps: jax.Array, kind: str, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """The prediction of `kind` in `PREDICTIONS` implied by the noise eps."""
    if kind == "eps":
        return eps
    if kind == "score":
        return -eps / sigma
    if kind == "x0":
        return (x_t - sigma * eps) / alpha
    if kind == "v":
        x0 = (x_t - sigma * eps) / alpha
        return alpha * eps - sigma * x0
    raise ValueError(f"Unknown prediction {kind!r}; choose one of {PREDICTIONS}.")


def convert(
    pred: jax.Array, *, source: str, target: str, x_t: jax.Array, alpha: jax.Array, sigma: jax.Array
) -> jax.Array:
    """Converts a prediction from `source` to `target` (both in `PREDICTIONS`) at (x_t, alpha, sigma)."""
    if source == target:
        return pred
    return from_eps(to_eps(pred, source, x_t, alpha, sigma), target, x_t, alpha, sigma)


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
