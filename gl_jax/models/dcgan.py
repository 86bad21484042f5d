"""DCGAN-style convolutional generator and discriminator for small images (8x8, 28x28, 32x32).

The layout follows Radford et al. 2016 (DCGAN): the generator projects z to a small feature map and
doubles it with stride-2 transposed convolutions while halving the channels; the discriminator mirrors it
with stride-2 convolutions and LeakyReLU(0.2). Two departures keep every example independent of the others
in its batch, which the shared train step needs (its losses must not depend on how a batch is split over
devices): no batch normalisation (the generator uses GroupNorm, Wu & He 2018, or none; the discriminator
none, as WGAN-GP's critic, Gulrajani et al. 2017, sec. 4), and spectral normalisation of the discriminator
as an option (Miyato et al. 2018).

The number of resolution doublings k is the largest of 3, 2, 1 with H divisible by 2^k and H / 2^k >= 2:
8x8 starts at 2x2 (k = 2), 28x28 at 7x7 (k = 2), 32x32 at 4x4 (k = 3, DCGAN's own layout).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gl_jax.models.layers import group_norm

__all__ = ["DCGAN", "Generator", "Discriminator", "num_doublings", "VARIANTS"]

VARIANTS: dict[str, dict[str, Any]] = {
    "dcgan-8": dict(latent_dim=32, generator_width=32, discriminator_width=32),
    "dcgan-28": dict(latent_dim=64, generator_width=64, discriminator_width=64),
    "dcgan-32": dict(latent_dim=128, generator_width=64, discriminator_width=64),
}


def num_doublings(size: int, *, max_doublings: int = 3) -> int:
    """k: the number of stride-2 stages between a `size`-pixel image and the smallest feature map.

    Args:
      size: the image's side, H (= W).
      max_doublings: the largest k to try.

    Returns:
      The largest k <= `max_doublings` with `size` divisible by 2^k and `size / 2^k >= 2`.

    Raises:
      ValueError: when no k >= 1 fits.
    """
    for k in range(max_doublings, 0, -1):
        if size % 2**k == 0 and size // 2**k >= 2:
            return k
    raise ValueError(f"Image size {size} cannot be halved to a feature map of at least 2x2.")


class Generator(nn.Module):
    """z `[B, latent_dim]` -> images `[B, H, W, C]` in (-1, 1).

    Attributes:
      image_shape: (H, W, C) of the output.
      width: channels at the output resolution; the first feature map has width * 2^k.
      norm: "group" (GroupNorm after every hidden layer) or "none".
    """

    image_shape: tuple[int, int, int]
    width: int = 64
    norm: str = "group"

    def _normalise(self, h: jax.Array) -> jax.Array:
        return group_norm(h.shape[-1])(h) if self.norm == "group" else h

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        if self.norm not in ("group", "none"):
            raise ValueError(f"Unknown generator norm {self.norm!r}; choose 'group' or 'none'.")
        height, width, channels = self.image_shape
        k = num_doublings(height)
        if width != height:
            raise ValueError(f"DCGAN expects square images, got {self.image_shape}.")
        size = height // 2**k
        h = nn.Dense(size * size * self.width * 2**k)(z)
        h = h.reshape(z.shape[0], size, size, self.width * 2**k)  # [B, H / 2^k, W / 2^k, width 2^k]
        h = nn.relu(self._normalise(h))
        for i in range(k):
            h = nn.ConvTranspose(self.width * 2 ** (k - 1 - i), (4, 4), strides=(2, 2), padding="SAME")(h)
            h = nn.relu(self._normalise(h))  # [B, H / 2^(k-1-i), ..., width 2^(k-1-i)]
        return jnp.tanh(nn.Conv(channels, (3, 3))(h))  # [B, H, W, C]


class Discriminator(nn.Module):
    """Images `[B, H, W, C]` -> one logit (critic value) per example `[B]`.

    Attributes:
      width: channels after the first stride-2 convolution, doubled at each following one.
      spectral_norm: divide every weight by its largest singular value, estimated by power iteration
        (Miyato et al. 2018); the iteration vectors live in the `batch_stats` collection.
    """

    width: int = 64
    spectral_norm: bool = False

    def _layer(self, layer: nn.Module, h: jax.Array, update_stats: bool) -> jax.Array:
        if self.spectral_norm:
            return nn.SpectralNorm(layer)(h, update_stats=update_stats)
        return layer(h)

    @nn.compact
    def __call__(self, x: jax.Array, *, update_stats: bool = False) -> jax.Array:
        k = num_doublings(x.shape[1])
        h = x
        for i in range(k):
            h = self._layer(nn.Conv(self.width * 2**i, (4, 4), strides=(2, 2)), h, update_stats)
            h = nn.leaky_relu(h, 0.2)  # [B, H / 2^(i+1), W / 2^(i+1), width 2^i]
        h = h.reshape(h.shape[0], -1)
        return self._layer(nn.Dense(1), h, update_stats)[:, 0]  # [B]


class DCGAN(nn.Module):
    """Both players in one module: `params` = {"generator": ..., "discriminator": ...}.

    Attributes:
      image_shape: (H, W, C) of the data (set by the family from the dataset).
      latent_dim: size of z ~ N(0, I).
      generator_width, discriminator_width: see `Generator.width`, `Discriminator.width`.
      generator_norm: see `Generator.norm`.
      spectral_norm: spectral normalisation of the discriminator.
    """

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = VARIANTS

    image_shape: tuple[int, int, int]
    latent_dim: int = 64
    generator_width: int = 64
    discriminator_width: int = 64
    generator_norm: str = "group"
    spectral_norm: bool = False

    def setup(self):
        self.generator = Generator(self.image_shape, width=self.generator_width, norm=self.generator_norm)
        self.discriminator = Discriminator(width=self.discriminator_width, spectral_norm=self.spectral_norm)

    def __call__(self, z: jax.Array, *, update_stats: bool = False) -> jax.Array:
        """D(G(z)): touches both players, so `init` creates both parameter groups."""
        return self.discriminator(self.generator(z), update_stats=update_stats)

    def generate(self, z: jax.Array) -> jax.Array:
        """z `[B, latent_dim]` -> images `[B, H, W, C]`."""
        return self.generator(z)

    def discriminate(self, x: jax.Array, *, update_stats: bool = False) -> jax.Array:
        """Images `[B, H, W, C]` -> logits `[B]`; `update_stats` advances spectral norm's power iteration."""
        return self.discriminator(x, update_stats=update_stats)
