"""Up- and down-sampling by a factor of 2 for U-Nets: nearest/average and FIR (anti-aliased) resampling.

The FIR path follows StyleGAN2's `upfirdn2d` (Karras et al. 2020), which NCSN++ adopts with the kernel
[1, 3, 3, 1] (Song et al. 2021, appendix H): the separable kernel k k^T / sum(k)^2 filters the zero-stuffed
(up) or to-be-decimated (down) image, with zero padding at the borders as in the published code. So away
from the borders FIR resampling maps a constant image to the same constant; the outermost row and column
see the zero padding. All arrays are NHWC.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.models.layers import conv3x3, ddpm_init

__all__ = [
    "Downsample",
    "ResampleConv",
    "Upsample",
    "fir_downsample_2d",
    "fir_filter_2d",
    "fir_kernel_2d",
    "fir_upsample_2d",
    "naive_downsample_2d",
    "naive_upsample_2d",
]


def fir_kernel_2d(kernel: Sequence[float]) -> np.ndarray:
    """The separable 2-D kernel `k k^T / sum(k)^2` of a 1-D FIR kernel.

    Args:
      kernel: the 1-D kernel `k`, of length K.

    Returns:
      `[K, K]` float32, summing to 1.
    """
    k = np.asarray(kernel, dtype=np.float32)
    k2 = np.outer(k, k)
    return k2 / k2.sum()


def fir_filter_2d(x: jax.Array, kernel: np.ndarray, *, pad: tuple[int, int], up: int = 1, down: int = 1):
    """Depthwise `upfirdn`: zero-stuff by `up`, pad, filter with `kernel`, keep every `down`-th pixel.

    Args:
      x: `[B, H, W, C]` images.
      kernel: `[k, k]` filter (symmetric kernels only, so correlation equals convolution).
      pad: zero padding (before, after) of both spatial axes, applied after zero-stuffing.
      up: upsampling factor (zeros inserted between pixels).
      down: downsampling factor (stride of the filter).

    Returns:
      `[B, H', W', C]` with `H' = (H * up + pad[0] + pad[1] - k) // down + 1`.
    """
    c = x.shape[-1]
    k = jnp.asarray(kernel, dtype=x.dtype)[:, :, None, None]  # [k, k, 1, 1]
    k = jnp.tile(k, (1, 1, 1, c))  # [k, k, 1, C]: one filter per channel
    # lhs_dilation inserts up-1 zeros between pixels but none after the last one, so add them to the
    # trailing pad to match upfirdn2d's zero-stuffing of length H * up.
    padding = ((pad[0], pad[1] + up - 1), (pad[0], pad[1] + up - 1))
    return jax.lax.conv_general_dilated(
        x,
        k,
        window_strides=(down, down),
        padding=padding,
        lhs_dilation=(up, up),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
    )


def fir_upsample_2d(x: jax.Array, kernel: Sequence[float] = (1, 3, 3, 1)) -> jax.Array:
    """FIR 2x upsampling (StyleGAN2 `upsample_2d`).

    The kernel is scaled by 4 (the factor squared) so the zero-stuffed image keeps its mean.

    Args:
      x: `[B, H, W, C]` images.
      kernel: the 1-D FIR kernel.

    Returns:
      `[B, 2H, 2W, C]`.
    """
    k = fir_kernel_2d(kernel) * 4.0
    p = k.shape[0] - 2
    return fir_filter_2d(x, k, pad=((p + 1) // 2 + 1, p // 2), up=2)


def fir_downsample_2d(x: jax.Array, kernel: Sequence[float] = (1, 3, 3, 1)) -> jax.Array:
    """FIR 2x downsampling (StyleGAN2 `downsample_2d`).

    Args:
      x: `[B, H, W, C]` images.
      kernel: the 1-D FIR kernel.

    Returns:
      `[B, H/2, W/2, C]`.
    """
    k = fir_kernel_2d(kernel)
    p = k.shape[0] - 2
    return fir_filter_2d(x, k, pad=((p + 1) // 2, p // 2), down=2)


def naive_upsample_2d(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling.

    Args:
      x: `[B, H, W, C]` images.

    Returns:
      `[B, 2H, 2W, C]`, each pixel repeated in a 2x2 block.
    """
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def naive_downsample_2d(x: jax.Array) -> jax.Array:
    """2x2 average pooling.

    Args:
      x: `[B, H, W, C]` images with even H and W.

    Returns:
      `[B, H/2, W/2, C]`.
    """
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class ResampleConv(nn.Module):
    """A 3x3 convolution fused with FIR 2x up- or down-sampling (StyleGAN2's `Conv2d(up|down=True)`).

    Up: a stride-2 transposed convolution (output 2H + 1) then the FIR filter (gain 4) trimming it to 2H;
    the learned kernel is used unflipped, which only relabels the weights.
    Down: the FIR filter (output H + 1) then a stride-2 valid convolution (output H / 2). Used by NCSN++'s
    progressive input/output branches, and to resample U-Nets built of DDPM blocks when FIR is on (Song et
    al. 2021); EDM's `aux_residual` convolutions are the same layer (Karras et al. 2022).

    Attributes:
      features: output channels.
      up: upsample (else downsample).
      fir_kernel: the 1-D FIR kernel.
      init_scale: scale of DDPM's variance-scaling initialisation.
      dtype: computation dtype (parameters stay float32).
    """

    features: int
    up: bool
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    init_scale: float = 1.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", ddpm_init(self.init_scale), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        dtype = self.dtype or x.dtype
        x, kernel, bias = x.astype(dtype), kernel.astype(dtype), bias.astype(dtype)
        dims = ("NHWC", "HWIO", "NHWC")
        k = fir_kernel_2d(self.fir_kernel)
        p = k.shape[0] - 2
        if self.up:
            # Zero-stuffed full convolution: [B, 2H + 1, 2W + 1, F].
            h = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2), dimension_numbers=dims
            )
            # (k - factor) - (conv_size - 1) = p - 2 taps of padding beyond the transposed conv's own.
            h = fir_filter_2d(h, k * 4.0, pad=((p - 1) // 2 + 1, (p - 2) // 2 + 1))  # [B, 2H, 2W, F]
        else:
            h = fir_filter_2d(x, k, pad=((p + 3) // 2, (p + 2) // 2))  # [B, H + 1, W + 1, C]
            h = jax.lax.conv_general_dilated(h, kernel, (2, 2), "VALID", dimension_numbers=dims)
        return h + bias


class _Resample(nn.Module):
    """The options of `Upsample` and `Downsample`.

    Attributes:
      features: output channels when `with_conv` (default: the input's).
      with_conv: add a learned 3x3 convolution.
      fir: FIR resampling with `fir_kernel` (else nearest neighbour up, 2x2 average pooling down).
      fir_kernel: the 1-D FIR kernel.
      dtype: computation dtype.
    """

    features: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    dtype: jnp.dtype | None = None

    def _fused_conv(self, x: jax.Array, *, up: bool) -> jax.Array:
        """FIR resampling fused with the 3x3 convolution (`ResampleConv`)."""
        features = self.features or x.shape[-1]
        return ResampleConv(features, up=up, fir_kernel=self.fir_kernel, dtype=self.dtype, name="conv")(x)


class Upsample(_Resample):
    """2x upsampling, optionally followed (or fused, with FIR) by a 3x3 convolution (DDPM; NCSN++).

    Maps `[B, H, W, C]` to `[B, 2H, 2W, features or C]`; the options are `_Resample`'s.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.fir and self.with_conv:
            return self._fused_conv(x, up=True)
        h = fir_upsample_2d(x, self.fir_kernel) if self.fir else naive_upsample_2d(x)  # [B, 2H, 2W, C]
        if self.with_conv:
            h = conv3x3(self.features or x.shape[-1], dtype=self.dtype, name="conv")(h)
        return h


class Downsample(_Resample):
    """2x downsampling: a stride-2 3x3 convolution, FIR filtering (fused with the convolution when both are
    asked for), or 2x2 average pooling (DDPM; NCSN++).

    Maps `[B, H, W, C]` to `[B, H/2, W/2, features or C]`; the options are `_Resample`'s.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.fir:
            return self._fused_conv(x, up=False) if self.with_conv else fir_downsample_2d(x, self.fir_kernel)
        if self.with_conv:
            # TF-style SAME padding with stride 2 pads (0, 1), as DDPM's TensorFlow code did.
            return conv3x3(self.features or x.shape[-1], strides=2, dtype=self.dtype, name="conv")(x)
        return naive_downsample_2d(x)
