"""Pixel scaling: the one map between integer pixel levels k in {0, ..., L - 1} and data in [-1, 1].

Two conventions, both from the literature and both used here. Plain (DDPM, Ho et al. 2020):
x = 2 k / (L - 1) - 1, so 0 maps to -1 and L - 1 to 1. Dequantized (Theis et al. 2016): x = 2 (k + u) / L - 1
with u in [0, 1); u ~ U[0, 1) is uniform dequantization, and u = 1/2 gives the bin centres, the points a
discrete decoder (VDM, Kingma et al. 2021) scores. A density on [-1, 1]^D then relates to the discrete
likelihood by log(L / 2) nats per dimension.

Every function takes NumPy or JAX arrays and returns the same kind (the data pipeline runs in NumPy).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["to_signed", "dequantized", "bin_centres", "to_levels", "bits_offset"]


def _xp(x):
    return jnp if isinstance(x, jax.Array) else np


def to_signed(k, *, levels: int):
    """Integer levels `k` (any shape) to [-1, 1] as float32: 2 k / (levels - 1) - 1 (DDPM's scaling)."""
    return 2.0 * (k.astype(np.float32) / (levels - 1)) - 1.0


def dequantized(k, u, *, levels: int):
    """Integer levels `k` plus offsets `u` in [0, 1) (same shape) to [-1, 1): 2 (k + u) / levels - 1."""
    return 2.0 * ((k.astype(np.float32) + u) / levels) - 1.0


def bin_centres(k, *, levels: int):
    """The centre of level `k`'s bin under the dequantized convention: 2 (k + 1/2) / levels - 1."""
    return dequantized(k, 0.5, levels=levels)


def to_levels(x, *, levels: int, dequantized: bool):
    """The integer levels behind data `x` in [-1, 1] (either convention), `int32`, clipped to the range.

    Without dequantization k = round((x + 1) (levels - 1) / 2); with it k = floor((x + 1) levels / 2).
    Both are exact in float32 for levels <= 2^16.

    Args:
      x: data in [-1, 1], any shape.
      levels: number of pixel levels (17 for sklearn digits, 256 for 8-bit images).
      dequantized: whether `x` came from `dequantized` (`config.data.dequantize`) rather than `to_signed`.
    """
    xp = _xp(x)
    k = xp.floor((x + 1.0) * (levels / 2.0)) if dequantized else xp.round((x + 1.0) * ((levels - 1) / 2.0))
    return xp.clip(k, 0, levels - 1).astype(xp.int32)


def bits_offset(levels: int) -> float:
    """Bits per dimension between a density on [-1, 1]^D and the discrete likelihood of its levels:
    log2(levels / 2), the log-volume of one dequantization bin of width 2 / levels."""
    return math.log2(levels / 2)
