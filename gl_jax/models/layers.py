"""Building blocks shared by the image networks (the U-Nets, the small U-Net, the VAE and the GAN):
initialisers, convolutions, group norm, spatial self-attention and the resolution check. All arrays are NHWC;
every layer takes a computation `dtype` and keeps float32 parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "NamedSizes",
    "AttnBlock",
    "BlockInit",
    "Initializer",
    "LECUN_ZERO_OUT",
    "check_resolutions",
    "conv1x1",
    "conv3x3",
    "ddpm_init",
    "group_norm",
    "nin",
]

Initializer = nn.initializers.Initializer


class NamedSizes:
    """Mixin of a network with a table of named sizes, `VARIANTS` (name -> field values).

    `from_variant(name, **overrides)` builds the named size with `overrides` replacing its entries; the
    model registry calls it for a config's `variant` option (`gl_jax.registry.Registry.build`).
    """

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_variant(cls, name: str, **overrides: Any):
        """The network of the named size in `VARIANTS`, with `overrides`."""
        if name not in cls.VARIANTS:
            raise ValueError(
                f"Unknown {cls.__name__} variant {name!r}; choose one of {sorted(cls.VARIANTS)}."
            )
        return cls(**{**cls.VARIANTS[name], **overrides})


class BlockInit(NamedTuple):
    """The initialisers of a residual branch (`AttnBlock`, `ResBlockDDPM`), replacing DDPM's.

    Attributes:
      kernel: every kernel but the branch's last layer's.
      out: the kernel of the branch's last layer.
    """

    kernel: Initializer
    out: Initializer


# The small U-Net's and the VAE's blocks: flax's default LeCun normal, and zero for each residual branch's
# last layer, so every block starts as the identity (Goyal et al. 2017).
LECUN_ZERO_OUT = BlockInit(kernel=nn.initializers.lecun_normal(), out=nn.initializers.zeros)


def ddpm_init(scale: float = 1.0) -> nn.initializers.Initializer:
    """DDPM's initialiser: variance scaling, fan_avg, uniform (Ho et al. 2020's `nn.default_init`).

    With `scale = 1` this is Glorot/Xavier uniform. `scale = 0` ("zero-initialised" output layers, score_sde's
    `init_scale=0.`) becomes 1e-10, as in score_sde: in variance that is EDM's `init_weight=1e-5` in
    standard deviation (Karras et al. 2022), so these layers start tiny but not exactly zero.

    Args:
      scale: the variance scale (0 for the near-zero output layers).

    Returns:
      A flax initialiser of kernels of any shape.
    """
    return nn.initializers.variance_scaling(scale if scale > 0 else 1e-10, "fan_avg", "uniform")


def conv3x3(
    features: int,
    *,
    strides: int = 1,
    use_bias: bool = True,
    init_scale: float = 1.0,
    kernel_init: Initializer | None = None,
    dtype: jnp.dtype | None = None,
    name: str | None = None,
) -> nn.Conv:
    """A 3x3 'SAME' convolution with DDPM initialisation and zero bias (score_sde's `ddpm_conv3x3`).

    Args:
      features: output channels.
      strides: the stride of both spatial axes.
      use_bias: add a (zero-initialised) bias.
      init_scale: scale of DDPM's initialiser, `ddpm_init(init_scale)`.
      kernel_init: an initialiser replacing DDPM's (then `init_scale` is unused).
      dtype: computation dtype; parameters stay float32.
      name: the layer's name in the parameter tree.

    Returns:
      The layer, mapping `[B, H, W, C]` to `[B, H / strides, W / strides, features]`.
    """
    return nn.Conv(
        features,
        (3, 3),
        strides=(strides, strides),
        padding="SAME",
        use_bias=use_bias,
        kernel_init=kernel_init or ddpm_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        name=name,
    )


def conv1x1(
    features: int,
    *,
    init_scale: float = 1.0,
    kernel_init: Initializer | None = None,
    dtype: jnp.dtype | None = None,
    name: str | None = None,
) -> nn.Conv:
    """A 1x1 convolution with DDPM initialisation (score_sde's `ddpm_conv1x1`).

    Args: as `conv3x3`'s. Returns: the layer, `[B, H, W, C]` -> `[B, H, W, features]`.
    """
    return nn.Conv(
        features,
        (1, 1),
        kernel_init=kernel_init or ddpm_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        name=name,
    )


def nin(
    features: int,
    *,
    init_scale: float = 0.1,
    kernel_init: Initializer | None = None,
    dtype: jnp.dtype | None = None,
    name: str | None = None,
) -> nn.Dense:
    """A per-pixel linear map over channels ("network in network", DDPM's `nin`).

    The default scale 0.1 is score_sde's `NIN` default, used for attention q/k/v and residual shortcuts
    (DDPM's TensorFlow code used 1.0; both are variance scalings of the same fan_avg uniform law).

    Args: as `conv3x3`'s. Returns: the layer, `[..., C]` -> `[..., features]`.
    """
    return nn.Dense(
        features,
        kernel_init=kernel_init or ddpm_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        name=name,
    )


def group_norm(channels: int, *, dtype: jnp.dtype | None = None, name: str | None = None) -> nn.GroupNorm:
    """GroupNorm with min(C // 4, 32) groups and epsilon 1e-6 (score_sde; EDM's GroupNorm(eps=1e-6)).

    Wu & He (2018) use 32 groups; narrow layers keep at least 4 channels per group. The group count is
    lowered further if needed so it divides C.

    Args:
      channels: C, the channels of the input.
      dtype: computation dtype; parameters stay float32.
      name: the layer's name in the parameter tree.

    Returns:
      The layer, `[B, H, W, C]` -> `[B, H, W, C]`.
    """
    groups = max(1, min(channels // 4, 32))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(num_groups=groups, epsilon=1e-6, dtype=dtype, name=name)


def check_resolutions(size: Sequence[int], channel_mults: Sequence[int]) -> int:
    """The factor 2^(L - 1) by which L = len(channel_mults) resolutions halve an image of (H, W) `size`.

    Args:
      size: (H, W) of the image (further entries are ignored).
      channel_mults: the network's channel multiplier per resolution.

    Returns:
      2^(L - 1); H and W divided by it are the lowest resolution's size.

    Raises:
      ValueError: naming the size and `channel_mults` when H or W is not divisible by the factor.
    """
    factor = 2 ** (len(channel_mults) - 1)
    if size[0] % factor or size[1] % factor:
        raise ValueError(
            f"Image size {tuple(size[:2])} is not divisible by {factor}, which channel_mults="
            f"{tuple(channel_mults)} needs; use fewer channel_mults."
        )
    return factor


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels with a residual connection (DDPM; score_sde `AttnBlockpp`).

    h = GroupNorm(x); q, k, v = NIN(h); a = softmax(q k^T / sqrt(C)) v; out = x + NIN_out(a), divided by
    sqrt(2) when `skip_rescale`. The block has no positional information, so it is equivariant to any
    permutation of the pixels (GroupNorm's statistics are permutation-invariant).

    Attributes:
      skip_rescale: divide the residual sum by sqrt(2) (Song et al. 2021; Karras et al. 2020).
      init_scale: initialisation scale of the output projection (0: the block starts as the identity).
      initializers: initialisers of the q, k, v projections (`kernel`) and of the output projection
        (`out`); default: DDPM's, at scale 0.1 (`nin`'s) and at `init_scale`.
      dtype: computation dtype; logits and softmax are computed in float32.
    """

    skip_rescale: bool = False
    init_scale: float = 0.0
    initializers: BlockInit | None = None
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_init, out_init = self.initializers or (None, None)
        b, hgt, wid, c = x.shape
        h = group_norm(c, dtype=self.dtype, name="norm")(x)
        qkv = [nin(c, kernel_init=kernel_init, dtype=self.dtype, name=n)(h) for n in "qkv"]
        q, k, v = (a.reshape(b, hgt * wid, c) for a in qkv)  # [B, N, C] each
        logits = jnp.einsum("bnc,bmc->bnm", q, k, preferred_element_type=jnp.float32) / math.sqrt(c)
        w = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, N, N]
        a = jnp.einsum("bnm,bmc->bnc", w, v).reshape(b, hgt, wid, c)  # [B, H, W, C]
        h = nin(c, init_scale=self.init_scale, kernel_init=out_init, dtype=self.dtype, name="proj_out")(a)
        out = x + h
        return out / math.sqrt(2.0) if self.skip_rescale else out
