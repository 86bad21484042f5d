"""Time embeddings for noise-conditional networks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["sinusoidal_embedding"]


def sinusoidal_embedding(t: jax.Array, dim: int, *, max_period: float = 10_000.0) -> jax.Array:
    """Transformer positional embedding of (continuous) times (Vaswani et al. 2017; Ho et al. 2020).

    Args:
      t: `[B]` times or noise levels (already scaled, e.g. 999 t for the VP SDE as in score_sde).
      dim: embedding size (even).
      max_period: the longest wavelength.

    Returns:
      `[B, dim]` embedding: sines then cosines.
    """
    if dim % 2:
        raise ValueError(f"Embedding dim must be even, got {dim}.")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - 1))  # [half]
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]  # [B, half]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
