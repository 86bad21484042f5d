"""A convolutional variational autoencoder with a spatial latent (Kingma & Welling 2014; the encoder/decoder
layout of Rombach et al. 2022's autoencoder at small scale).

The encoder maps images `[B, H, W, C]` to the mean and log-variance of q(z|x), a latent feature map
`[B, H / 2^d, W / 2^d, latent_channels]` with d = len(channel_mults) - 1 stride-2 downsamplings; the
decoder maps a latent back to `out_channels` numbers per pixel, the parameters of the family's decoder
distribution. The residual blocks are the U-Nets' (`ResBlockDDPM`) without a noise embedding or dropout,
initialised as the small U-Net's (`LECUN_ZERO_OUT`); nothing mixes examples, so every example's output
depends on that example alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from gl_jax.models.layers import LECUN_ZERO_OUT, check_resolutions, group_norm
from gl_jax.models.resample import naive_upsample_2d
from gl_jax.models.resblocks import ResBlockDDPM

__all__ = ["ConvVAE", "Encoder", "Decoder"]


def _res_blocks(h: jax.Array, features: int, count: int) -> jax.Array:
    """`count` residual blocks of `features` channels, without noise conditioning."""
    for _ in range(count):
        h = ResBlockDDPM(features, dropout=0.0, initializers=LECUN_ZERO_OUT)(h, None)
    return h


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
            h = _res_blocks(h, self.width * mult, self.num_res_blocks)
            if level < len(self.channel_mults) - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)  # [B, H / 2^(level+1), ...]
        h = nn.silu(group_norm(h.shape[-1])(h))
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
            h = _res_blocks(h, self.width * self.channel_mults[level], self.num_res_blocks)
            if level > 0:
                # Nearest-neighbour upsampling then a convolution, against checkerboard artefacts (Odena
                # et al. 2016).
                h = nn.Conv(h.shape[-1], (3, 3))(naive_upsample_2d(h))  # [B, H / 2^(level-1), ...]
        h = nn.silu(group_norm(h.shape[-1])(h))
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
        """x `[B, H, W, C]` -> (mean, log_var) of q(z|x), each `[B, h, w, latent_channels]`."""
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        """z `[B, h, w, latent_channels]` -> decoder parameters `[B, H, W, out_channels]`."""
        return self.decoder(z)

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """(h, w, latent_channels) of the latent of an (H, W, C) image."""
        factor = check_resolutions(image_shape[:2], self.channel_mults)
        return image_shape[0] // factor, image_shape[1] // factor, self.latent_channels
