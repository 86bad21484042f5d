"""Embeddings of noise levels and class labels for conditional networks."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["GaussianFourierEmbedding", "LabelEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(
    t: jax.Array, dim: int, *, max_period: float = 10_000.0, cos_first: bool = False, endpoint: bool = True
) -> jax.Array:
    """Transformer positional embedding of (continuous) times (Vaswani et al. 2017; Ho et al. 2020).

    Frequencies are `max_period ** (-k / (half - 1))` for k = 0..half-1 when `endpoint` (DDPM's
    `get_timestep_embedding`, also score_sde's DDPM++ and EDM's DDPM++), or `max_period ** (-k / half)`
    otherwise (GLIDE and DiT, Peebles & Xie 2023).

    Args:
      t: `[B]` times or noise levels (already scaled, e.g. 999 t for the VP SDE as in score_sde).
      dim: embedding size (even).
      max_period: the longest wavelength.
      cos_first: put the cosines first (DiT's order) instead of the sines (DDPM's order).
      endpoint: whether the lowest frequency is exactly `1 / max_period` (see above).

    Returns:
      `[B, dim]` embedding: sines then cosines (cosines then sines if `cos_first`).
    """
    if dim % 2:
        raise ValueError(f"Embedding dim must be even, got {dim}.")
    half = dim // 2
    denom = half - 1 if endpoint else half
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / denom)  # [half]
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]  # [B, half]
    parts = [jnp.cos(args), jnp.sin(args)] if cos_first else [jnp.sin(args), jnp.cos(args)]
    return jnp.concatenate(parts, axis=-1)


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (Tancik et al. 2020), NCSN++'s noise embedding (Song et al. 2021).

    The frequencies `W ~ N(0, scale^2)` are a parameter (so they travel with the checkpoint) that is never
    trained: gradients are stopped, as in score_sde. NCSN++ uses `scale = 16` and embeds log(sigma).

    Attributes:
      features: number of frequencies; the output has `2 * features` entries.
      scale: standard deviation of the frequencies.
    """

    features: int = 128
    scale: float = 16.0

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        """Maps `[B]` inputs to `[B, 2 * features]` features: sin(2 pi W t) then cos(2 pi W t)."""
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.features,))
        w = jax.lax.stop_gradient(w)
        proj = t.astype(jnp.float32)[:, None] * w[None, :] * (2.0 * math.pi)  # [B, F]
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class LabelEmbedding(nn.Module):
    """Class-label embedding with label dropout for classifier-free guidance (Ho & Salimans 2022).

    The table has `num_classes + 1` rows; row `num_classes` is the learned "no label" embedding, used when a
    label is dropped, when `y` is None, and when a caller passes `y = num_classes` (the unconditional half of
    classifier-free guidance). Labels are dropped only when `train` is True, with the rng stream "dropout"
    (as DiT's `LabelEmbedder`, Peebles & Xie 2023).

    Attributes:
      num_classes: number of real classes.
      features: embedding size.
      dropout: probability of replacing a label by the null label during training.
      stddev: standard deviation of the initial embeddings (0.02 in DiT).
    """

    num_classes: int
    features: int
    dropout: float = 0.0
    stddev: float = 0.02

    @nn.compact
    def __call__(self, y: jax.Array | None, batch: int, *, train: bool = False) -> jax.Array:
        """Embeds `[B]` integer labels (or None: all unconditional) into `[B, features]`."""
        if y is None:
            y = jnp.full((batch,), self.num_classes, dtype=jnp.int32)
        y = y.astype(jnp.int32)
        if train and self.dropout > 0.0:
            drop = jax.random.bernoulli(self.make_rng("dropout"), self.dropout, y.shape)  # [B]
            y = jnp.where(drop, self.num_classes, y)
        table = nn.Embed(
            self.num_classes + 1,
            self.features,
            embedding_init=nn.initializers.normal(self.stddev),
            name="table",
        )
        return table(y)
