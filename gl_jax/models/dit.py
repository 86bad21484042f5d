"""DiT: a transformer denoiser on image patches with adaLN-Zero conditioning (Peebles & Xie 2023).

Patchify (a p x p stride-p convolution) -> add a fixed 2-D sin-cos position embedding -> `depth` DiT blocks
conditioned on c = embed(cond) + embed(y) through adaptive LayerNorm whose shift, scale and residual gate
are regressed from c and start at zero (adaLN-Zero, so every block starts as the identity) -> a final
adaLN + linear layer (zero-initialised) -> unpatchify. Sizes follow ViT (S, B, L) plus XL; "DiT-XL/2" is
XL with 2x2 patches. The published models run on 32x32x4 VAE latents of 256x256 ImageNet with 1000 classes
and a learned variance (`learn_sigma`, 8 output channels).

Same call as the U-Nets: `apply({"params": p}, x, cond, y=None, *, train=False) -> [B, H, W, C]`, with
`cond` the caller's noise conditioning (DiT uses the DDPM step index in [0, 999], i.e. 999 t).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.models.embeddings import LabelEmbedding, sinusoidal_embedding
from gl_jax.models.layers import NamedSizes

__all__ = ["DiT", "DiTBlock", "VARIANTS", "sincos_pos_embed_2d"]

# Depth, width and attention heads of each size.
_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}

# Peebles & Xie 2023, table 1 (configurations) and `models.py` (DiT_XL_2 ... DiT_S_8). Label dropout 0.1 is
# the paper's classifier-free-guidance setting; it only acts when num_classes > 0.
VARIANTS: dict[str, dict[str, Any]] = {
    f"DiT-{size}/{patch}": dict(depth=d, hidden_size=w, num_heads=h, patch_size=patch, label_dropout=0.1)
    for size, (d, w, h) in _SIZES.items()
    for patch in (2, 4, 8)
}
# Smoke tests: the smallest DiT with every part, on 8x8 or 32x32 inputs.
VARIANTS["tiny"] = dict(depth=2, hidden_size=32, num_heads=2, patch_size=2, label_dropout=0.1)

_xavier = nn.initializers.xavier_uniform()


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding (MAE's `get_2d_sincos_pos_embed`, used by DiT).

    The first half of the channels encodes the column index, the second half the row index; each half is
    [sin, cos] of the index times 10000^(-k / (dim / 4)).

    Returns:
      `[grid_h * grid_w, dim]` (row-major over the grid), float32.
    """
    if dim % 4:
        raise ValueError(f"The 2-D position embedding needs dim divisible by 4, got {dim}.")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))  # [D/4]
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")  # [h, w] each

    def embed_1d(pos: np.ndarray) -> np.ndarray:
        out = pos.reshape(-1)[:, None] * omega[None, :]  # [h w, D/4]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # [h w, D/2]

    return np.concatenate([embed_1d(cols), embed_1d(rows)], axis=1).astype(np.float32)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN: x * (1 + scale) + shift, with per-example `[B, D]` shift and scale over `[B, T, D]` tokens."""
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


def _layer_norm(dtype) -> nn.LayerNorm:
    # No learned affine: adaLN supplies the scale and shift (DiT: elementwise_affine=False, eps=1e-6).
    return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, dtype=dtype)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero (Peebles & Xie 2023, figure 3).

    Attributes:
      num_heads: attention heads.
      mlp_ratio: MLP hidden width over the model width.
      dtype: computation dtype; attention logits and softmax are float32.
    """

    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        b, t, d = x.shape
        zero = nn.initializers.zeros
        mod = nn.Dense(6 * d, kernel_init=zero, bias_init=zero, dtype=self.dtype, name="adaLN")(nn.silu(c))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, axis=-1)  # [B, D]

        h = _modulate(_layer_norm(self.dtype)(x), shift_msa, scale_msa)
        qkv = nn.Dense(3 * d, kernel_init=_xavier, dtype=self.dtype, name="qkv")(h)  # [B, T, 3D]
        q, k, v = jnp.split(qkv.reshape(b, t, 3, self.num_heads, d // self.num_heads), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # [B, T, heads, D / heads]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        w = jax.nn.softmax(logits / math.sqrt(d // self.num_heads), axis=-1).astype(
            v.dtype
        )  # [B, heads, T, T]
        a = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, t, d)
        x = x + gate_msa[:, None, :] * nn.Dense(d, kernel_init=_xavier, dtype=self.dtype, name="proj")(a)

        h = _modulate(_layer_norm(self.dtype)(x), shift_mlp, scale_mlp)
        h = nn.Dense(int(d * self.mlp_ratio), kernel_init=_xavier, dtype=self.dtype, name="fc1")(h)
        h = nn.Dense(d, kernel_init=_xavier, dtype=self.dtype, name="fc2")(nn.gelu(h, approximate=True))
        return x + gate_mlp[:, None, :] * h


class DiT(NamedSizes, nn.Module):
    """Diffusion transformer: `apply({"params": p}, x, cond, y=None, *, train=False) -> [B, H, W, C']`.

    x is `[B, H, W, C]` with H and W divisible by `patch_size`; cond is a `[B]` float (DiT: 999 t); y is an
    optional `[B]` int label. C' = C, or 2C with `learn_sigma`. With `train=True`, label dropout uses the
    rng stream "dropout".

    Attributes:
      patch_size: side of the square patches (2, 4 or 8 in the paper).
      hidden_size: model width D.
      depth: number of DiT blocks.
      num_heads: attention heads.
      mlp_ratio: MLP hidden width over D.
      num_classes: number of class labels, 0 = unconditional; the label embedding has a null row at index
        `num_classes`, used for dropped labels, for y=None and for y=num_classes.
      label_dropout: probability of dropping a label in training (classifier-free guidance).
      learn_sigma: output 2C channels (eps and the variance interpolation, Nichol & Dhariwal 2021), as the
        published DiTs do.
      frequency_embedding_size: size of the sinusoidal embedding of cond (256 in DiT).
      dtype: computation dtype; parameters are float32.
    """

    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 0
    label_dropout: float = 0.0
    learn_sigma: bool = False
    frequency_embedding_size: int = 256
    dtype: Any = None

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = VARIANTS

    @nn.compact
    def __call__(
        self, x: jax.Array, cond: jax.Array, y: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"DiT expects images [B, H, W, C], got shape {x.shape}.")
        b, hgt, wid, c = x.shape
        p, d = self.patch_size, self.hidden_size
        if hgt % p or wid % p:
            raise ValueError(f"Image size {(hgt, wid)} is not divisible by patch_size={p}.")
        if d % self.num_heads:
            raise ValueError(f"hidden_size={d} is not divisible by num_heads={self.num_heads}.")
        if y is not None and self.num_classes == 0:
            raise ValueError("Labels y were given to an unconditional DiT (num_classes=0).")
        gh, gw = hgt // p, wid // p

        # Patchify; initialised like a Linear on the flattened patch (DiT), hence the explicit fan axes.
        patch_init = nn.initializers.variance_scaling(
            1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3
        )
        embed = nn.Conv(
            d,
            (p, p),
            strides=(p, p),
            padding="VALID",
            kernel_init=patch_init,
            dtype=self.dtype,
            name="patch_embed",
        )
        tokens = embed(x).reshape(b, gh * gw, d)  # [B, T, D]
        tokens = tokens + jnp.asarray(sincos_pos_embed_2d(d, gh, gw), tokens.dtype)[None]

        freq = sinusoidal_embedding(cond, self.frequency_embedding_size, cos_first=True, endpoint=False)
        t_init = nn.initializers.normal(0.02)
        cemb = nn.Dense(d, kernel_init=t_init, dtype=self.dtype, name="t_embed0")(freq)
        cemb = nn.Dense(d, kernel_init=t_init, dtype=self.dtype, name="t_embed1")(nn.silu(cemb))  # [B, D]
        if self.num_classes:
            label = LabelEmbedding(self.num_classes, d, self.label_dropout, name="y_embed")
            cemb = cemb + label(y, b, train=train)

        for i in range(self.depth):
            block = DiTBlock(self.num_heads, self.mlp_ratio, dtype=self.dtype, name=f"block{i}")
            tokens = block(tokens, cemb)  # [B, T, D]

        out_c = 2 * c if self.learn_sigma else c
        zero = nn.initializers.zeros
        mod = nn.Dense(2 * d, kernel_init=zero, dtype=self.dtype, name="final_adaLN")(nn.silu(cemb))
        shift, scale = jnp.split(mod, 2, axis=-1)
        h = _modulate(_layer_norm(self.dtype)(tokens), shift, scale)
        final = nn.Dense(p * p * out_c, kernel_init=zero, dtype=self.dtype, name="final_linear")
        h = final(h)  # [B, T, p p C']
        # Unpatchify: token (i, j) holds the p x p x C' patch at rows i p.., columns j p...
        h = h.reshape(b, gh, gw, p, p, out_c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hgt, wid, out_c)
        return h.astype(jnp.float32)
