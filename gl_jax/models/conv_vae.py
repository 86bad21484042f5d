"""A convolutional variational autoencoder with a spatial latent (Kingma & Welling 2014; the encoder/decoder
layout of Rombach et al. 2022's autoencoder at small scale).

The encoder maps images `[B, H, W, C]` to the mean and log-variance of q(z|x), a latent feature map
`[B, H / 2^d, W / 2^d, latent_channels]` with d = len(channel_mults) - 1 stride-2 downsamplings; the
decoder maps a latent back to `out_channels` numbers per pixel, the parameters of the family's decoder
distribution. Residual blocks use GroupNorm and SiLU; nothing mixes examples, so every example's output
depends on that example alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

__all__ = ["ConvVAE", "Encoder", "Decoder"]


def _groups(channels: int) -> int:
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return g


class ResBlock(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(self.channels, (3, 3))(nn.silu(nn.GroupNorm(num_groups=_groups(x.shape[-1]))(x)))
        h = nn.silu(nn.GroupNorm(num_groups=_groups(self.channels))(h))
        h = nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros)(h)  # Starts as the identity.
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1))(x)
        return x + h


class Encoder(nn.Module):
    """x `[B, H, W, C]` -> (mean, log_var), each `[B, H / 2^d, W / 2^d, latent_channels]`."""

    latent_channels: int
    width: int
    channel_mults: Sequence[int]
    num_res_blocks: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.Conv(self.width * self.channel_mults[0], (3, 3))(x)
        for level, mult in enumerate(self.channel_mults):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.width * mult)(h)
            if level < len(self.channel_mults) - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)  # [B, H / 2^(level+1), ...]
        h = nn.silu(nn.GroupNorm(num_groups=_groups(h.shape[-1]))(h))
        stats = nn.Conv(2 * self.latent_channels, (3, 3))(h)  # [B, h, w, 2 latent_channels]
        mean, log_var = stats[..., : self.latent_channels], stats[..., self.latent_channels :]
        return mean, log_var


class Decoder(nn.Module):
    """z `[B, h, w, latent_channels]` -> `[B, h 2^d, w 2^d, out_channels]`."""

    out_channels: int
    width: int
    channel_mults: Sequence[int]
    num_res_blocks: int

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = nn.Conv(self.width * self.channel_mults[-1], (3, 3))(z)
        for level in reversed(range(len(self.channel_mults))):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.width * self.channel_mults[level])(h)
            if level > 0:
                b, hh, ww, c = h.shape
                h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), method="nearest")
                h = nn.Conv(c, (3, 3))(
                    h
                )  # Nearest-neighbour upsampling then a convolution (Odena et al. 2016).
        h = nn.silu(nn.GroupNorm(num_groups=_groups(h.shape[-1]))(h))
        return nn.Conv(self.out_channels, (3, 3))(h)


class ConvVAE(nn.Module):
    """Encoder and decoder in one module: `params` = {"encoder": ..., "decoder": ...}.

    Attributes:
      out_channels: decoder outputs per pixel (set by the family from its decoder distribution).
      latent_channels: channels of the latent feature map.
      width: base channel count.
      channel_mults: channel multiplier per resolution; d = len - 1 halvings, so H and W must be divisible
        by 2^d (28 = 7 * 4 allows two).
      num_res_blocks: residual blocks per resolution.
    """

    out_channels: int
    latent_channels: int = 4
    width: int = 32
    channel_mults: Sequence[int] = (1, 2)
    num_res_blocks: int = 1

    def setup(self):
        self.encoder = Encoder(
            self.latent_channels, self.width, tuple(self.channel_mults), self.num_res_blocks
        )
        self.decoder = Decoder(self.out_channels, self.width, tuple(self.channel_mults), self.num_res_blocks)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Decodes the posterior mean; touches both halves, so `init` creates both parameter groups."""
        mean, _ = self.encoder(x)
        return self.decoder(mean)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """(h, w, latent_channels) of the latent of an (H, W, C) image."""
        factor = 2 ** (len(self.channel_mults) - 1)
        height, width = image_shape[0], image_shape[1]
        if height % factor or width % factor:
            raise ValueError(
                f"Image size {tuple(image_shape[:2])} is not divisible by {factor}, which channel_mults="
                f"{tuple(self.channel_mults)} needs."
            )
        return height // factor, width // factor, self.latent_channels
