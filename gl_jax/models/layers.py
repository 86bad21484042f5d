"""Building blocks shared by the DDPM / DDPM++ / NCSN++ U-Nets: initialisers, convolutions, group norm and
spatial self-attention. All arrays are NHWC; every layer takes a computation `dtype` and keeps float32
parameters.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["AttnBlock", "conv1x1", "conv3x3", "ddpm_init", "group_norm", "nin"]


def ddpm_init(scale: float = 1.0) -> nn.initializers.Initializer:
    """DDPM's initialiser: variance scaling, fan_avg, uniform (Ho et al. 2020's `nn.default_init`).

    With `scale = 1` this is Glorot/Xavier uniform. `scale = 0` ("zero-initialised" output layers, score_sde's
    `init_scale=0.`) becomes 1e-10, as in score_sde: in variance that is EDM's `init_weight=1e-5` in
    standard deviation (Karras et al. 2022), so these layers start tiny but not exactly zero.
    """
    return nn.initializers.variance_scaling(scale if scale > 0 else 1e-10, "fan_avg", "uniform")


def conv3x3(
    features: int,
    *,
    strides: int = 1,
    use_bias: bool = True,
    init_scale: float = 1.0,
    dtype: jnp.dtype | None = None,
    name: str | None = None,
) -> nn.Conv:
    """A 3x3 'SAME' convolution with DDPM initialisation and zero bias (score_sde's `ddpm_conv3x3`)."""
    return nn.Conv(
        features,
        (3, 3),
        strides=(strides, strides),
        padding="SAME",
        use_bias=use_bias,
        kernel_init=ddpm_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        name=name,
    )


def conv1x1(
    features: int, *, init_scale: float = 1.0, dtype: jnp.dtype | None = None, name: str | None = None
) -> nn.Conv:
    """A 1x1 convolution with DDPM initialisation (score_sde's `ddpm_conv1x1`)."""
    return nn.Conv(
        features,
        (1, 1),
        kernel_init=ddpm_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        name=name,
    )


def nin(
    features: int, *, init_scale: float = 0.1, dtype: jnp.dtype | None = None, name: str | None = None
) -> nn.Dense:
    """A per-pixel linear map over channels ("network in network", DDPM's `nin`).

    The default scale 0.1 is score_sde's `NIN` default, used for attention q/k/v and residual shortcuts
    (DDPM's TensorFlow code used 1.0; both are variance scalings of the same fan_avg uniform law).
    """
    return nn.Dense(
        features, kernel_init=ddpm_init(init_scale), bias_init=nn.initializers.zeros, dtype=dtype, name=name
    )


def group_norm(channels: int, *, dtype: jnp.dtype | None = None, name: str | None = None) -> nn.GroupNorm:
    """GroupNorm with min(C // 4, 32) groups and epsilon 1e-6 (score_sde; EDM's GroupNorm(eps=1e-6)).

    Wu & He (2018) use 32 groups; narrow layers keep at least 4 channels per group. The group count is
    lowered further if needed so it divides C.
    """
    groups = max(1, min(channels // 4, 32))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(num_groups=groups, epsilon=1e-6, dtype=dtype, name=name)


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels with a residual connection (DDPM; score_sde `AttnBlockpp`).

    h = GroupNorm(x); q, k, v = NIN(h); a = softmax(q k^T / sqrt(C)) v; out = x + NIN_out(a), divided by
    sqrt(2) when `skip_rescale`. The block has no positional information, so it is equivariant to any
    permutation of the pixels (GroupNorm's statistics are permutation-invariant).

    Attributes:
      skip_rescale: divide the residual sum by sqrt(2) (Song et al. 2021; Karras et al. 2020).
      init_scale: initialisation scale of the output projection (0: the block starts as the identity).
      dtype: computation dtype; logits and softmax are computed in float32.
    """

    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hgt, wid, c = x.shape
        h = group_norm(c, dtype=self.dtype, name="norm")(x)
        q = nin(c, dtype=self.dtype, name="q")(h).reshape(b, hgt * wid, c)  # [B, N, C]
        k = nin(c, dtype=self.dtype, name="k")(h).reshape(b, hgt * wid, c)  # [B, N, C]
        v = nin(c, dtype=self.dtype, name="v")(h).reshape(b, hgt * wid, c)  # [B, N, C]
        logits = jnp.einsum("bnc,bmc->bnm", q, k, preferred_element_type=jnp.float32) / math.sqrt(c)
        w = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, N, N]
        a = jnp.einsum("bnm,bmc->bnc", w, v).reshape(b, hgt, wid, c)  # [B, H, W, C]
        h = nin(c, init_scale=self.init_scale, dtype=self.dtype, name="proj_out")(a)
        out = x + h
        return out / math.sqrt(2.0) if self.skip_rescale else out
