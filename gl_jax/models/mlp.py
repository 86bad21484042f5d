"""A time-conditioned MLP for N-dimensional data (toy distributions, latents)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gl_jax.models.embeddings import sinusoidal_embedding

__all__ = ["ScoreMLP"]


class ScoreMLP(nn.Module):
    """Residual MLP mapping (x `[B, D]`, t `[B]`) to an output `[B, D]`.

    Attributes:
      features: width of each hidden layer; residual blocks need equal widths.
      embed_dim: size of the sinusoidal time embedding.
      time_scale: the time is multiplied by this before embedding (1000 for t in [0, 1]).
    """

    features: Sequence[int] = (256, 256, 256)
    embed_dim: int = 128
    time_scale: float = 1000.0

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        if x.ndim != 2:
            raise ValueError(f"ScoreMLP expects flat data [B, D], got shape {x.shape}.")
        emb = sinusoidal_embedding(t * self.time_scale, self.embed_dim)  # [B, E]
        emb = nn.Dense(self.embed_dim)(nn.silu(nn.Dense(self.embed_dim)(emb)))
        h = nn.Dense(self.features[0])(x)
        for width in self.features:
            # Pre-activation residual block with additive time conditioning.
            r = nn.Dense(width)(nn.silu(h)) + nn.Dense(width)(emb)
            r = nn.Dense(width)(nn.silu(r))
            h = h + r if h.shape[-1] == width else r
        out = nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(nn.silu(h))
        return out.astype(jnp.float32)
