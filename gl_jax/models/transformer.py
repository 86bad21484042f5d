"""A decoder-only transformer over token sequences (Vaswani et al. 2017; GPT-2's pre-LayerNorm blocks,
Radford et al. 2019), with learned or rotary positions (Su et al. 2021) and a key/value cache for decoding.

`__call__(tokens [B, T]) -> logits [B, T, V]` runs every position at once with a causal mask; `decode`
runs one position against a cache of the earlier positions' keys and values, which `init_cache` makes.
Both compute the same function: position t sees positions <= t only. Input tokens are 0..V (V is the
begin-of-sequence token that starts every input), outputs are logits over 0..V-1.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["Transformer", "rotary_embedding", "POSITIONS"]

POSITIONS = ("learned", "rope")

Cache = list[tuple[jax.Array, jax.Array]]


def rotary_embedding(x: jax.Array, positions: jax.Array, *, base: float = 10_000.0) -> jax.Array:
    """Rotates feature pairs (x_i, x_{i + d/2}) by the angle p base^(-2i/d) (RoPE, Su et al. 2021, eq. 34).

    The dot product of a rotated query at p and a rotated key at p' depends on p - p' only.

    Args:
      x: `[B, T, H, D]` queries or keys (D even).
      positions: `[T]` integer positions.
      base: the wavelength base.

    Returns:
      `[B, T, H, D]`.
    """
    half = x.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [D / 2]
    angles = positions.astype(jnp.float32)[:, None] * freqs[None, :]  # [T, D / 2]
    cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1): q `[B, Tq, H, D]`, k and v `[B, Tk, H, D]`,
    mask `[Tq, Tk]` (True: may attend) -> `[B, Tq, H, D]`."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    logits = jnp.where(mask[None, None], logits, jnp.finfo(logits.dtype).min)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


class CausalSelfAttention(nn.Module):
    d_model: int
    num_heads: int
    positions: str
    rope_base: float

    def setup(self):
        head_dim = self.d_model // self.num_heads
        self.qkv = nn.DenseGeneral((3, self.num_heads, head_dim))
        self.out = nn.DenseGeneral(self.d_model, axis=(-2, -1))

    def _qkv(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        qkv = self.qkv(x)  # [B, T, 3, H, D]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, H, D] each
        if self.positions == "rope":
            q = rotary_embedding(q, positions, base=self.rope_base)
            k = rotary_embedding(k, positions, base=self.rope_base)
        return q, k, v

    def __call__(self, x: jax.Array) -> jax.Array:
        positions = jnp.arange(x.shape[1])
        q, k, v = self._qkv(x, positions)
        causal = positions[:, None] >= positions[None, :]  # [T, T]
        return self.out(_attend(q, k, v, causal))

    def decode(
        self, x: jax.Array, pos: jax.Array, k_cache: jax.Array, v_cache: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x `[B, 1, d_model]` at position `pos`; caches `[B, T_max, H, D]` hold positions < pos."""
        q, k, v = self._qkv(x, pos[None])
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k, pos, axis=1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v, pos, axis=1)
        visible = (jnp.arange(k_cache.shape[1]) <= pos)[None, :]  # [1, T_max]
        return self.out(_attend(q, k_cache, v_cache, visible)), k_cache, v_cache


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(LN(x)), then x + MLP(LN(x))."""

    d_model: int
    num_heads: int
    mlp_ratio: int
    positions: str
    rope_base: float

    def setup(self):
        self.norm1 = nn.LayerNorm()
        self.attn = CausalSelfAttention(self.d_model, self.num_heads, self.positions, self.rope_base)
        self.norm2 = nn.LayerNorm()
        self.fc1 = nn.Dense(self.mlp_ratio * self.d_model)
        self.fc2 = nn.Dense(self.d_model)

    def _mlp(self, x: jax.Array) -> jax.Array:
        return x + self.fc2(nn.gelu(self.fc1(self.norm2(x))))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._mlp(x + self.attn(self.norm1(x)))

    def decode(self, x, pos, k_cache, v_cache):
        h, k_cache, v_cache = self.attn.decode(self.norm1(x), pos, k_cache, v_cache)
        return self._mlp(x + h), k_cache, v_cache


class Transformer(nn.Module):
    """Decoder-only transformer: input tokens `[B, T]` in 0..V (V = begin-of-sequence) -> logits over V.

    Attributes:
      vocab_size: V, the number of output classes (set by the family from the data).
      max_len: the longest sequence (set by the family: the number of pixels, or the text block length).
      num_layers, d_model, num_heads, mlp_ratio: the usual sizes (d_model divisible by num_heads).
      positions: "learned" (an embedding per position added to the input) or "rope" (rotary queries and
        keys in every layer).
      rope_base: RoPE's wavelength base.
    """

    vocab_size: int
    max_len: int
    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    positions: str = "rope"
    rope_base: float = 10_000.0

    def setup(self):
        if self.positions not in POSITIONS:
            raise ValueError(f"Unknown positions {self.positions!r}; choose one of {POSITIONS}.")
        if self.d_model % self.num_heads or (self.d_model // self.num_heads) % 2:
            raise ValueError(
                f"d_model={self.d_model} must split into num_heads={self.num_heads} heads of even size."
            )
        self.embed = nn.Embed(self.vocab_size + 1, self.d_model)  # + 1: the begin-of-sequence token.
        if self.positions == "learned":
            self.position_embedding = self.param(
                "position_embedding", nn.initializers.normal(0.02), (self.max_len, self.d_model)
            )
        self.blocks = [
            Block(self.d_model, self.num_heads, self.mlp_ratio, self.positions, self.rope_base)
            for _ in range(self.num_layers)
        ]
        self.norm = nn.LayerNorm()
        self.head = nn.Dense(self.vocab_size)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Logits `[B, T, V]`; position t depends on tokens[:, :t + 1] only."""
        h = self.embed(tokens)  # [B, T, d_model]
        if self.positions == "learned":
            h = h + self.position_embedding[None, : tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))

    def decode(self, token: jax.Array, pos: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
        """Logits `[B, V]` at position `pos` for input tokens `[B]`, and the cache with `pos` written in."""
        h = self.embed(token)[:, None]  # [B, 1, d_model]
        if self.positions == "learned":
            h = h + jax.lax.dynamic_slice_in_dim(self.position_embedding, pos, 1)[None]
        new_cache = []
        for block, (k_cache, v_cache) in zip(self.blocks, cache, strict=True):
            h, k_cache, v_cache = block.decode(h, pos, k_cache, v_cache)
            new_cache.append((k_cache, v_cache))
        return self.head(self.norm(h))[:, 0], new_cache

    def init_cache(self, batch_size: int, dtype=jnp.float32) -> Cache:
        """Zero key/value caches `[B, max_len, H, D]`, one pair per layer (needs no parameters)."""
        shape = (batch_size, self.max_len, self.num_heads, self.d_model // self.num_heads)
        return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(self.num_layers)]
