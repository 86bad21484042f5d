"""A small time-conditioned U-Net for low-resolution images (8x8 digits, 28x28 Fashion-MNIST).

The layout follows the DDPM U-Net (Ho et al. 2020, appendix B) at small scale: residual blocks with
GroupNorm, SiLU and an additive time embedding; stride-2 convolutions down; nearest-neighbour upsampling
plus a convolution up; skip connections concatenated at each resolution; self-attention at chosen
resolutions. The published DDPM++/NCSN++ networks live in their own module.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gl_jax.models.embeddings import sinusoidal_embedding

__all__ = ["SmallUNet"]


def _groups(channels: int) -> int:
    """GroupNorm groups of at least 4 channels, at most 32 groups (Wu & He 2018 use 32 groups of >= 4)."""
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return g


class ResBlock(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        h = nn.silu(nn.GroupNorm(num_groups=_groups(x.shape[-1]))(x))
        h = nn.Conv(self.channels, (3, 3))(h)
        h = h + nn.Dense(self.channels)(nn.silu(emb))[:, None, None, :]
        h = nn.silu(nn.GroupNorm(num_groups=_groups(self.channels))(h))
        # Zero-initialised last conv: each block starts as the identity (Goyal et al. 2017).
        h = nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros)(h)
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1))(x)
        return x + h


class AttnBlock(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hgt, wid, c = x.shape
        h = nn.GroupNorm(num_groups=_groups(c))(x).reshape(b, hgt * wid, c)  # [B, HW, C]
        h = nn.SelfAttention(num_heads=1, qkv_features=c, out_kernel_init=nn.initializers.zeros)(h)
        return x + h.reshape(b, hgt, wid, c)


class SmallUNet(nn.Module):
    """Maps (x `[B, H, W, C]`, t `[B]`) to an output shaped like x.

    Attributes:
      channels: base channel count.
      channel_mults: channel multiplier per resolution; the image is halved between resolutions, so H and
        W must be divisible by 2 ** (len(channel_mults) - 1).
      num_res_blocks: residual blocks per resolution on the way down (one more on the way up).
      attention_resolutions: spatial sizes (e.g. (7,)) at which to add self-attention.
      time_scale: the time is multiplied by this before embedding (1000 for t in [0, 1]).
    """

    channels: int = 64
    channel_mults: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = ()
    time_scale: float = 1000.0

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"SmallUNet expects images [B, H, W, C], got shape {x.shape}.")
        factor = 2 ** (len(self.channel_mults) - 1)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(
                f"Image size {x.shape[1:3]} is not divisible by {factor}, which channel_mults="
                f"{tuple(self.channel_mults)} needs; use fewer channel_mults."
            )
        emb_dim = 4 * self.channels
        emb = sinusoidal_embedding(t * self.time_scale, self.channels)  # [B, C]
        emb = nn.Dense(emb_dim)(nn.silu(nn.Dense(emb_dim)(emb)))  # [B, 4C]

        h = nn.Conv(self.channels, (3, 3))(x)
        skips = [h]
        for level, mult in enumerate(self.channel_mults):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.channels * mult)(h, emb)
                if h.shape[1] in self.attention_resolutions:
                    h = AttnBlock()(h)
                skips.append(h)
            if level != len(self.channel_mults) - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)
                skips.append(h)

        h = ResBlock(h.shape[-1])(h, emb)
        h = AttnBlock()(h)
        h = ResBlock(h.shape[-1])(h, emb)

        for level, mult in reversed(list(enumerate(self.channel_mults))):
            for _ in range(self.num_res_blocks + 1):
                h = ResBlock(self.channels * mult)(jnp.concatenate([h, skips.pop()], axis=-1), emb)
                if h.shape[1] in self.attention_resolutions:
                    h = AttnBlock()(h)
            if level != 0:
                b, hgt, wid, c = h.shape
                h = jax.image.resize(h, (b, 2 * hgt, 2 * wid, c), method="nearest")
                h = nn.Conv(c, (3, 3))(h)
        h = nn.silu(nn.GroupNorm(num_groups=_groups(h.shape[-1]))(h))
        return nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h)
