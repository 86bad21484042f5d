"""The published noise-conditional U-Nets: DDPM, DDPM++ and NCSN++ (also in EDM's sizes), as one module.

One `UNet` covers

  * DDPM (Ho et al. 2020, appendix B; `diffusion_tf/models/unet.py`): DDPM residual blocks, positional
    time embedding, strided-convolution down / nearest+convolution up, attention after every block of an
    attention resolution;
  * DDPM++ and NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs", appendix H, and
    the yang-song/score_sde CIFAR-10 configs): BigGAN residual blocks that resample inside the block,
    skip connections rescaled by 1/sqrt(2), positional (DDPM++) or Gaussian Fourier (NCSN++, scale 16)
    noise embedding, FIR [1, 3, 3, 1] resampling (NCSN++), progressive input/output branches, 4 or 8
    ("deep") residual blocks per resolution;
  * EDM's DDPM++ and NCSN++ (Karras et al. 2022, `SongUNet` with channel multipliers 2-2-2): the same
    networks on three resolutions.

Named sizes come from the single table `VARIANTS`; build one with `UNet.from_variant(name, **overrides)`.

What `cond` means is the caller's choice and must match how the network was trained:

  * DDPM / DDPM++ (positional embedding): the discrete step index or 999 t for t in [0, 1] (score_sde);
  * NCSN++ (Fourier embedding): log(sigma) (score_sde embeds the log of the VE noise level);
  * EDM: c_noise = ln(sigma) / 4 (`gl_jax.models.preconditioning.EDMUNet` and `EDMPrecond` do this).

The network returns its raw output, shaped like x; score_sde's `scale_by_sigma` (VE score = F / sigma) and
EDM's preconditioning belong to the caller. Inputs are expected centred (e.g. in [-1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gl_jax.models.embeddings import GaussianFourierEmbedding, LabelEmbedding, sinusoidal_embedding
from gl_jax.models.layers import AttnBlock, check_resolutions, conv1x1, conv3x3, ddpm_init, group_norm
from gl_jax.models.resample import (
    Downsample,
    Upsample,
    fir_downsample_2d,
    fir_upsample_2d,
    naive_downsample_2d,
    naive_upsample_2d,
)
from gl_jax.models.resblocks import ResBlockBigGAN, ResBlockDDPM

__all__ = ["UNet", "UNetEncoder", "VARIANTS"]

_CIFAR = dict(channels=128, channel_mults=(1, 2, 2, 2), attention_resolutions=(16,), dropout=0.1)
_SONG = dict(resblock="biggan", skip_rescale=True, init_scale=0.0)

# Every named size, decoded in one place. Sources:
#   ddpm-cifar10: Ho et al. 2020, appendix B (35.7M parameters).
#   ddpmpp-*: score_sde configs vp/cifar10_ddpmpp_continuous.py and subvp/cifar10_ddpmpp_deep_continuous.py.
#   ncsnpp-*: score_sde configs ve/cifar10_ncsnpp_continuous.py and ve/cifar10_ncsnpp_deep_continuous.py.
#   edm-ddpmpp-cifar10, edm-ncsnpp-cifar10: Karras et al. 2022, `--arch=ddpmpp|ncsnpp` for CIFAR-10
#     (channels 2-2-2, dropout 0.13, table 7); NCSN++ there embeds c_noise with 2 x 128 Fourier features.
VARIANTS: dict[str, dict[str, Any]] = {
    "ddpm-cifar10": dict(
        _CIFAR,
        num_res_blocks=2,
        resblock="ddpm",
        skip_rescale=False,
        init_scale=0.0,
        attn_every_up_block=True,
    ),
    "ddpmpp-cifar10": dict(_CIFAR, **_SONG, num_res_blocks=4),
    "ddpmpp-deep-cifar10": dict(_CIFAR, **_SONG, num_res_blocks=8),
    "ncsnpp-cifar10": dict(
        _CIFAR, **_SONG, num_res_blocks=4, embedding="fourier", fir=True, progressive_input="residual"
    ),
    "ncsnpp-deep-cifar10": dict(
        _CIFAR, **_SONG, num_res_blocks=8, embedding="fourier", fir=True, progressive_input="residual"
    ),
    "edm-ddpmpp-cifar10": dict(_CIFAR, **_SONG, channel_mults=(2, 2, 2), num_res_blocks=4, dropout=0.13),
    "edm-ncsnpp-cifar10": dict(
        _CIFAR,
        **_SONG,
        channel_mults=(2, 2, 2),
        num_res_blocks=4,
        dropout=0.13,
        embedding="fourier",
        fir=True,
        progressive_input="residual",
    ),
    # 28x28 (Fashion-MNIST: 28 -> 14 -> 7): a DDPM++ of 1.26M parameters, small enough to train on a CPU.
    "ddpmpp-small": dict(
        _SONG, channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(7,), dropout=0.1
    ),
    # Smoke tests: the smallest networks with every kind of block, on 8x8 or 32x32 images (attention at 4x4
    # or 16x16).
    "tiny": dict(
        channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4, 16), dropout=0.1
    ),
    "tiny-ncsnpp": dict(
        _SONG,
        channels=16,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4, 16),
        dropout=0.1,
        embedding="fourier",
        fir=True,
        progressive_input="residual",
        progressive="output_skip",
    ),
}

_PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
_PROGRESSIVE_OUTPUT = ("none", "output_skip", "residual")


class UNetEncoder(nn.Module):
    """The contracting half of the U-Net plus its middle block: noise embedding, input convolution, residual
    blocks with attention, resampling, optional progressive input branch, then ResBlock-Attention-ResBlock.

    Shared by `UNet` and the noise-conditional classifier. Called on its own it returns the middle
    block's features `[B, H / 2^(L-1), W / 2^(L-1), channels * channel_mults[-1]]`.

    Attributes:
      channels: base channel count (score_sde's `nf`).
      channel_mults: channel multiplier per resolution; resolution i has size H / 2^i.
      num_res_blocks: residual blocks per resolution on the way down (one more on the way up).
      attention_resolutions: spatial sizes (e.g. (16,)) with self-attention after the residual blocks.
      dropout: dropout rate inside residual blocks (rng stream "dropout", only when train=True).
      resblock: "ddpm" (DDPM's block; resampling by separate layers) or "biggan" (resampling residual
        blocks, DDPM++/NCSN++).
      embedding: "positional" (sinusoidal, DDPM/DDPM++) or "fourier" (Gaussian Fourier features, NCSN++).
      fourier_scale: standard deviation of the Fourier frequencies (16 in NCSN++).
      resample_with_conv: "ddpm" blocks resample with a learned 3x3 convolution.
      fir: FIR resampling with `fir_kernel` (NCSN++), else nearest neighbour / average pooling.
      fir_kernel: the 1-D FIR kernel.
      skip_rescale: divide residual sums by sqrt(2) (DDPM++/NCSN++).
      init_scale: initialisation scale of each residual branch's last layer (0 as published).
      progressive_input: "none", "input_skip" (add a downsampled copy of the input at each resolution) or
        "residual" (a convolutional residual pyramid of the input; NCSN++).
      progressive_combine: how "input_skip" merges the pyramid: "sum" or "cat".
      dtype: computation dtype (e.g. jnp.bfloat16); parameters are float32.
    """

    channels: int = 128
    channel_mults: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    resblock: str = "ddpm"
    embedding: str = "positional"
    fourier_scale: float = 16.0
    resample_with_conv: bool = True
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = False
    init_scale: float = 0.0
    progressive_input: str = "none"
    progressive_combine: str = "sum"
    dtype: Any = None

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = VARIANTS

    @classmethod
    def from_variant(cls, name: str, **overrides: Any) -> UNetEncoder:
        """The module of the named size in `VARIANTS`, with `overrides` replacing table entries."""
        if name not in cls.VARIANTS:
            raise ValueError(
                f"Unknown {cls.__name__} variant {name!r}; choose one of {sorted(cls.VARIANTS)}."
            )
        fields = {f for f in cls.__dataclass_fields__ if f not in ("parent", "name")}
        return cls(**{**{k: v for k, v in cls.VARIANTS[name].items() if k in fields}, **overrides})

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array, *, train: bool = False) -> jax.Array:
        self._check(x, cond)
        temb = self._noise_embedding(cond)
        h, _ = self._encode(x, temb, train)
        return h

    # --- pieces, called from the compact `__call__` of this class or a subclass ----------------------

    def _check(self, x: jax.Array, cond: jax.Array) -> None:
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects images [B, H, W, C], got shape {x.shape}.")
        if cond.shape != x.shape[:1]:
            raise ValueError(f"cond must have shape [B] = {x.shape[:1]}, got {cond.shape}.")
        check_resolutions(x.shape[1:3], self.channel_mults)
        for name, value, allowed in (
            ("resblock", self.resblock, ("ddpm", "biggan")),
            ("embedding", self.embedding, ("positional", "fourier")),
            ("progressive_input", self.progressive_input, _PROGRESSIVE_INPUT),
            ("progressive_combine", self.progressive_combine, ("sum", "cat")),
        ):
            if value not in allowed:
                raise ValueError(f"Unknown {name}={value!r}; choose one of {allowed}.")

    def _noise_embedding(self, cond: jax.Array) -> jax.Array:
        """`[B]` conditioning -> `[B, 4 channels]`: sinusoidal or Fourier features, Dense, SiLU, Dense.

        The SiLU before each block's projection is applied inside the blocks (DDPM; score_sde).
        """
        if self.embedding == "fourier":
            fourier = GaussianFourierEmbedding(self.channels, self.fourier_scale, name="fourier")
            emb = fourier(cond)  # [B, 2 channels]
        else:
            emb = sinusoidal_embedding(cond, self.channels)  # [B, channels]
        dense = lambda name: nn.Dense(4 * self.channels, kernel_init=ddpm_init(), dtype=self.dtype, name=name)
        return dense("temb_dense1")(nn.silu(dense("temb_dense0")(emb)))  # [B, 4 channels]

    def _resblock(self, name: str, features: int | None = None, *, up: bool = False, down: bool = False):
        common = dict(dropout=self.dropout, skip_rescale=self.skip_rescale, init_scale=self.init_scale)
        if self.resblock == "ddpm":
            return ResBlockDDPM(features, **common, dtype=self.dtype, name=name)
        return ResBlockBigGAN(
            features,
            up=up,
            down=down,
            fir=self.fir,
            fir_kernel=self.fir_kernel,
            **common,
            dtype=self.dtype,
            name=name,
        )

    def _attn(self, name: str) -> AttnBlock:
        return AttnBlock(
            skip_rescale=self.skip_rescale, init_scale=self.init_scale, dtype=self.dtype, name=name
        )

    def _encode(self, x: jax.Array, temb: jax.Array, train: bool) -> tuple[jax.Array, list[jax.Array]]:
        """Down path and middle block. Returns the middle features and the skip activations."""
        num_levels = len(self.channel_mults)
        pyramid = x  # the progressive-input image pyramid, [B, H_i, W_i, C_i]
        hs = [conv3x3(self.channels, dtype=self.dtype, name="conv_in")(x)]
        for level, mult in enumerate(self.channel_mults):
            for i in range(self.num_res_blocks):
                h = self._resblock(f"down{level}_block{i}", self.channels * mult)(hs[-1], temb, train=train)
                if h.shape[1] in self.attention_resolutions:
                    h = self._attn(f"down{level}_attn{i}")(h)
                hs.append(h)
            if level == num_levels - 1:
                continue
            if self.resblock == "ddpm":
                h = Downsample(
                    with_conv=self.resample_with_conv,
                    fir=self.fir,
                    fir_kernel=self.fir_kernel,
                    dtype=self.dtype,
                    name=f"down{level}_resample",
                )(hs[-1])
            else:
                h = self._resblock(f"down{level}_resample", down=True)(hs[-1], temb, train=train)
            if self.progressive_input == "input_skip":
                pyramid = (
                    fir_downsample_2d(pyramid, self.fir_kernel) if self.fir else naive_downsample_2d(pyramid)
                )
                skip = conv1x1(h.shape[-1], dtype=self.dtype, name=f"down{level}_combine")(pyramid)
                h = h + skip if self.progressive_combine == "sum" else jnp.concatenate([skip, h], axis=-1)
            elif self.progressive_input == "residual":
                pyramid = Downsample(
                    h.shape[-1],
                    with_conv=True,
                    fir=self.fir,
                    fir_kernel=self.fir_kernel,
                    dtype=self.dtype,
                    name=f"down{level}_pyramid",
                )(pyramid)
                pyramid = (pyramid + h) / math.sqrt(2.0) if self.skip_rescale else pyramid + h
                h = pyramid
            hs.append(h)

        h = self._resblock("mid_block0")(hs[-1], temb, train=train)
        h = self._attn("mid_attn")(h)
        h = self._resblock("mid_block1")(h, temb, train=train)
        return h, hs


class UNet(UNetEncoder):
    """Noise-conditional U-Net: `apply({"params": p}, x, cond, y=None, *, train=False) -> [B, H, W, C]`.

    Covers DDPM, DDPM++ and NCSN++ in score_sde's and EDM's sizes (module docstring, `VARIANTS`). x is
    `[B, H, W, C]` with H, W divisible by 2^(len(channel_mults) - 1); cond is a `[B]` float (its meaning
    depends on the embedding, see the module docstring); y is an optional `[B]` int label. With
    `train=True`, dropout and label dropout draw from the rng stream "dropout". The output is float32,
    shaped like x.

    Attributes (in addition to `UNetEncoder`'s):
      progressive: output branch: "none", "output_skip" (sum of upsampled per-resolution outputs) or
        "residual" (an upsampling residual pyramid); NCSN++ for high resolutions.
      attn_every_up_block: on the way up, attend after every residual block of an attention resolution
        (DDPM, as in the original TensorFlow code) instead of once per resolution (score_sde, EDM).
      num_classes: number of class labels, 0 = unconditional. A learned label embedding (with an extra
        "null" row at index `num_classes`) is added to the noise embedding.
      label_dropout: probability of replacing a label by the null label in training (classifier-free
        guidance, Ho & Salimans 2022).
    """

    progressive: str = "none"
    attn_every_up_block: bool = False
    num_classes: int = 0
    label_dropout: float = 0.0

    @nn.compact
    def __call__(
        self, x: jax.Array, cond: jax.Array, y: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        return self._unet(x, cond, y, train)

    def _unet(self, x: jax.Array, cond: jax.Array, y: jax.Array | None, train: bool) -> jax.Array:
        """The whole network; a method of its own so subclasses (e.g. `EDMUNet`) can wrap it."""
        self._check(x, cond)
        if self.progressive not in _PROGRESSIVE_OUTPUT:
            raise ValueError(
                f"Unknown progressive={self.progressive!r}; choose one of {_PROGRESSIVE_OUTPUT}."
            )
        if y is not None and self.num_classes == 0:
            raise ValueError("Labels y were given to an unconditional UNet (num_classes=0).")
        temb = self._noise_embedding(cond)  # [B, 4 channels]
        if self.num_classes:
            label = LabelEmbedding(self.num_classes, temb.shape[-1], self.label_dropout, name="label_embed")
            temb = temb + label(y, x.shape[0], train=train)
        h, hs = self._encode(x, temb, train)
        out_ch = x.shape[-1]
        num_levels = len(self.channel_mults)
        pyramid = None  # the progressive-output pyramid
        for level in reversed(range(num_levels)):
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, hs.pop()], axis=-1)
                features = self.channels * self.channel_mults[level]
                h = self._resblock(f"up{level}_block{i}", features)(h, temb, train=train)
                if self.attn_every_up_block and h.shape[1] in self.attention_resolutions:
                    h = self._attn(f"up{level}_attn{i}")(h)
            if not self.attn_every_up_block and h.shape[1] in self.attention_resolutions:
                h = self._attn(f"up{level}_attn")(h)
            if self.progressive != "none":
                h, pyramid = self._progressive_output(h, pyramid, level, out_ch)
            if level != 0:
                if self.resblock == "ddpm":
                    h = Upsample(
                        with_conv=self.resample_with_conv,
                        fir=self.fir,
                        fir_kernel=self.fir_kernel,
                        dtype=self.dtype,
                        name=f"up{level}_resample",
                    )(h)
                else:
                    h = self._resblock(f"up{level}_resample", up=True)(h, temb, train=train)
        if self.progressive == "output_skip":
            return pyramid.astype(jnp.float32)
        h = nn.silu(group_norm(h.shape[-1], dtype=self.dtype, name="norm_out")(h))
        h = conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype, name="conv_out")(h)
        return h.astype(jnp.float32)

    def _progressive_output(
        self, h: jax.Array, pyramid: jax.Array | None, level: int, out_ch: int
    ) -> tuple[jax.Array, jax.Array]:
        """One step of NCSN++'s progressive output branch at resolution `level` (score_sde `NCSNpp`)."""
        top = level == len(self.channel_mults) - 1
        if self.progressive == "output_skip":
            act = nn.silu(group_norm(h.shape[-1], dtype=self.dtype, name=f"up{level}_pyramid_norm")(h))
            out = conv3x3(
                out_ch, init_scale=self.init_scale, dtype=self.dtype, name=f"up{level}_pyramid_conv"
            )(act)
            if top:
                return h, out
            up = fir_upsample_2d(pyramid, self.fir_kernel) if self.fir else naive_upsample_2d(pyramid)
            return h, up + out
        # "residual"
        if top:
            act = nn.silu(group_norm(h.shape[-1], dtype=self.dtype, name=f"up{level}_pyramid_norm")(h))
            return h, conv3x3(h.shape[-1], dtype=self.dtype, name=f"up{level}_pyramid_conv")(act)
        up = Upsample(
            h.shape[-1],
            with_conv=True,
            fir=self.fir,
            fir_kernel=self.fir_kernel,
            dtype=self.dtype,
            name=f"up{level}_pyramid",
        )(pyramid)
        pyramid = (up + h) / math.sqrt(2.0) if self.skip_rescale else up + h
        return pyramid, pyramid
