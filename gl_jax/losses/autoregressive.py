"""Autoregressive objectives: the exact negative log-likelihood of token sequences.

A model of p(t_1, ..., t_T) = prod_i p(t_i | t_<i) (the chain rule; Larochelle & Murray 2011, van den
Oord et al. 2016 for pixels) is trained on the exact NLL -sum_i log p(t_i | t_<i), which in bits divided
by T is bits per dimension of the discrete data, with no dequantization offset.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["shift_right", "token_nll", "nll_to_bits_per_dim"]


def shift_right(tokens: jax.Array, *, bos: int) -> jax.Array:
    """The model's inputs: `[B, T]` tokens -> `[bos, t_1, ..., t_{T-1}]`, so position i predicts t_i."""
    start = jnp.full((tokens.shape[0], 1), bos, tokens.dtype)
    return jnp.concatenate([start, tokens[:, :-1]], axis=1)


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log p(t_i | t_<i) for every position, in nats.

    Args:
      logits: `[B, T, V]`.
      targets: `[B, T]` integers in 0..V-1.

    Returns:
      `[B, T]`.
    """
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]


def nll_to_bits_per_dim(nll: jax.Array) -> jax.Array:
    """Mean NLL per token in nats -> bits per dimension (exact for discrete data)."""
    return nll / math.log(2.0)
