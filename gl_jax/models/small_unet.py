"""A small time-conditioned U-Net for low-resolution images (8x8 digits, 28x28 Fashion-MNIST).

The layout follows the DDPM U-Net (Ho et al. 2020, appendix B) at small scale: residual blocks with
GroupNorm, SiLU and an additive time embedding; stride-2 convolutions down; nearest-neighbour upsampling
plus a convolution up; skip connections concatenated at each resolution; self-attention at chosen
resolutions. The blocks are the published U-Nets' (`ResBlockDDPM`, `AttnBlock`) without dropout and with
flax's default initialisation (`LECUN_ZERO_OUT`). The published DDPM++/NCSN++ networks live in `unet.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gl_jax.models.embeddings import sinusoidal_embedding
from gl_jax.models.layers import LECUN_ZERO_OUT, AttnBlock, check_resolutions, group_norm
from gl_jax.models.resample import naive_upsample_2d
from gl_jax.models.resblocks import ResBlockDDPM

__all__ = ["SmallUNet"]


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
        """Args: x `[B, H, W, C]` images, t `[B]` times. Returns: `[B, H, W, C]`."""
        if x.ndim != 4:
            raise ValueError(f"SmallUNet expects images [B, H, W, C], got shape {x.shape}.")
        check_resolutions(x.shape[1:3], self.channel_mults)
        emb_dim = 4 * self.channels
        emb = sinusoidal_embedding(t * self.time_scale, self.channels)  # [B, C]
        emb = nn.Dense(emb_dim)(nn.silu(nn.Dense(emb_dim)(emb)))  # [B, 4C]

        def block(h: jax.Array, features: int) -> jax.Array:
            h = ResBlockDDPM(features, dropout=0.0, initializers=LECUN_ZERO_OUT)(h, emb)
            if h.shape[1] in self.attention_resolutions:
                h = AttnBlock(initializers=LECUN_ZERO_OUT)(h)
            return h

        h = nn.Conv(self.channels, (3, 3))(x)
        skips = [h]
        for level, mult in enumerate(self.channel_mults):
            for _ in range(self.num_res_blocks):
                h = block(h, self.channels * mult)
                skips.append(h)
            if level != len(self.channel_mults) - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)  # [B, H / 2^(level+1), ...]
                skips.append(h)

        h = ResBlockDDPM(dropout=0.0, initializers=LECUN_ZERO_OUT)(h, emb)
        h = AttnBlock(initializers=LECUN_ZERO_OUT)(h)
        h = ResBlockDDPM(dropout=0.0, initializers=LECUN_ZERO_OUT)(h, emb)

        for level, mult in reversed(list(enumerate(self.channel_mults))):
            for _ in range(self.num_res_blocks + 1):
                h = block(jnp.concatenate([h, skips.pop()], axis=-1), self.channels * mult)
            if level != 0:
                h = nn.Conv(h.shape[-1], (3, 3))(naive_upsample_2d(h))  # [B, H / 2^(level-1), ...]
        h = nn.silu(group_norm(h.shape[-1])(h))
        return nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h)
