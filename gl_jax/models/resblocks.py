"""Residual blocks of the DDPM / DDPM++ / NCSN++ U-Nets, conditioned on a noise embedding.

Both blocks compute  h = Conv(Dropout(act(GN(Conv(act(GN(x))) + Dense(act(temb))))))  and add a
shortcut; they differ in where resampling happens and in the shortcut (Ho et al. 2020, appendix B; Song et
al. 2021, appendix H). The activation is SiLU ("swish") throughout, as in all the published configs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gl_jax.models.layers import BlockInit, Initializer, conv1x1, conv3x3, ddpm_init, group_norm, nin
from gl_jax.models.resample import (
    fir_downsample_2d,
    fir_upsample_2d,
    naive_downsample_2d,
    naive_upsample_2d,
)

__all__ = ["ResBlockBigGAN", "ResBlockDDPM"]


def _add_time_bias(
    h: jax.Array, temb: jax.Array | None, features: int, dtype, kernel_init: Initializer | None = None
) -> jax.Array:
    """Adds a per-channel bias projected from the noise embedding (`[B, E]` -> `[B, 1, 1, F]`)."""
    if temb is None:
        return h
    dense = nn.Dense(features, kernel_init=kernel_init or ddpm_init(), dtype=dtype, name="temb_proj")
    bias = dense(nn.silu(temb))  # [B, F]
    return h + bias[:, None, None, :]


class ResBlockDDPM(nn.Module):
    """DDPM's residual block (Ho et al. 2020), with DDPM++'s optional skip rescaling (Song et al. 2021).

    The shortcut is the identity, or a 1x1 projection (NIN) when the channel count changes. Without a noise
    embedding (`temb=None`) it is a plain residual block (the VAE's).

    Attributes:
      features: output channels (default: the input's).
      dropout: dropout rate before the last convolution.
      skip_rescale: divide the residual sum by sqrt(2).
      init_scale: initialisation scale of the last convolution (0: the block starts as the identity).
      initializers: initialisers of the last convolution (`out`) and of every other kernel (`kernel`);
        default: DDPM's, `ddpm_init`, at `init_scale` for the last convolution, 0.1 for the shortcut, else 1.
      dtype: computation dtype.
    """

    features: int | None = None
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    initializers: BlockInit | None = None
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None, *, train: bool = False) -> jax.Array:
        out = self.features or x.shape[-1]
        kernel_init, out_init = self.initializers or (None, None)
        h = nn.silu(group_norm(x.shape[-1], dtype=self.dtype, name="norm0")(x))
        h = conv3x3(out, kernel_init=kernel_init, dtype=self.dtype, name="conv0")(h)  # [B, H, W, F]
        h = _add_time_bias(h, temb, out, self.dtype, kernel_init)
        h = nn.silu(group_norm(out, dtype=self.dtype, name="norm1")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv3x3(out, init_scale=self.init_scale, kernel_init=out_init, dtype=self.dtype, name="conv1")(h)
        if x.shape[-1] != out:
            x = nin(out, kernel_init=kernel_init, dtype=self.dtype, name="shortcut")(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResBlockBigGAN(nn.Module):
    """BigGAN-style residual block (Brock et al. 2019) of DDPM++/NCSN++ (score_sde `ResnetBlockBigGANpp`).

    Up- or down-sampling happens inside the block, on both branches, after the first normalisation (FIR
    with `fir_kernel`, or nearest / 2x2 average); the shortcut is a 1x1 convolution whenever the shape
    changes. EDM's DDPM++/NCSN++ `UNetBlock` is the same block (Karras et al. 2022).

    Attributes:
      features: output channels (default: the input's).
      up: upsample by 2.
      down: downsample by 2.
      dropout: dropout rate before the last convolution.
      fir: FIR resampling (else nearest neighbour / average pooling).
      fir_kernel: the 1-D FIR kernel.
      skip_rescale: divide the residual sum by sqrt(2).
      init_scale: initialisation scale of the last convolution.
      dtype: computation dtype.
    """

    features: int | None = None
    up: bool = False
    down: bool = False
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    dtype: jnp.dtype | None = None

    def _resample(self, x: jax.Array) -> jax.Array:
        if self.up:
            return fir_upsample_2d(x, self.fir_kernel) if self.fir else naive_upsample_2d(x)
        if self.down:
            return fir_downsample_2d(x, self.fir_kernel) if self.fir else naive_downsample_2d(x)
        return x

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None, *, train: bool = False) -> jax.Array:
        if self.up and self.down:
            raise ValueError("A residual block cannot both upsample and downsample.")
        out = self.features or x.shape[-1]
        h = nn.silu(group_norm(x.shape[-1], dtype=self.dtype, name="norm0")(x))
        h = self._resample(h)
        skip = self._resample(x)
        h = conv3x3(out, dtype=self.dtype, name="conv0")(h)
        h = _add_time_bias(h, temb, out, self.dtype)
        h = nn.silu(group_norm(out, dtype=self.dtype, name="norm1")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv3x3(out, init_scale=self.init_scale, dtype=self.dtype, name="conv1")(h)
        if x.shape[-1] != out or self.up or self.down:
            skip = conv1x1(out, dtype=self.dtype, name="shortcut")(skip)
        return (skip + h) / math.sqrt(2.0) if self.skip_rescale else skip + h
