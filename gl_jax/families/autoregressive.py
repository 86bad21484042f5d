"""Autoregressive transformers over pixels or characters as a model family (exact likelihoods).

Images become sequences of their integer pixel values in raster order (row by row, channels innermost),
recovered exactly from the pipeline's [-1, 1] images (`gl_jax.pixels.to_levels`), with as many classes
as the dataset has levels (17 for sklearn digits, 256 for 8-bit images; van den Oord et al. 2016,
PixelRNN's 256-way softmax). Text (`text/<name>` datasets, `gl_jax.data.text`) is a sequence of UTF-8
bytes, 256 classes. The loss is the exact NLL, so its value in bits is the test bits/dim directly.

Sampling runs on device in one `lax.scan` over positions, each step one token for the whole batch with the
transformer's key/value cache, at a temperature and optionally from the top k classes only (Fan et al.
2018); `sample_tokens(..., use_cache=False)` recomputes the full prefix at every step instead, the same
samples for the same key at T times the cost (a check of the cache).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gl_jax import pixels
from gl_jax.families.base import Family
from gl_jax.losses.autoregressive import nll_to_bits_per_dim, shift_right, token_nll

__all__ = ["Autoregressive", "AROptions", "sample_logits", "BYTE_VOCAB"]

BYTE_VOCAB = 256


@dataclasses.dataclass(frozen=True)
class AROptions:
    """The autoregressive model's vocabulary and sampling (`config.ar`).

    Attributes:
      vocab_size: number of token classes; 0 takes the dataset's pixel levels, or 256 for text (bytes).
      temperature: sampling temperature (0: the most likely token).
      top_k: sample from the k most likely tokens only (0: all).
    """

    vocab_size: int = 0
    temperature: float = 1.0
    top_k: int = 0


def sample_logits(
    key: jax.Array, logits: jax.Array, *, temperature: float = 1.0, top_k: int = 0
) -> jax.Array:
    """One token per row of `logits` `[B, V]`: categorical at a temperature, optionally top-k; `[B]` int32.

    Args:
      key: PRNG key.
      logits: `[B, V]`.
      temperature: divides the logits (0: argmax).
      top_k: keep only the k largest logits of each row (0: all).
    """
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Autoregressive(Family):
    """An autoregressive model of token sequences: images as pixel sequences, or text as bytes.

    Attributes:
      model: a module with `__call__(tokens [B, T]) -> logits [B, T, V]`, `decode(token, pos, cache)`
        and `init_cache(batch)`, built for `vocab_size` classes and T = prod(data_shape), e.g. `Transformer`.
      data_shape: one example's shape: (H, W, C) images or (T,) text.
      vocab_size: V; token V is the begin-of-sequence input.
      image: whether examples are images in [-1, 1] (else token values stored as floats, e.g. text).
      dequantized: whether the pipeline's images carry dequantization noise.
      options: the sampling temperature and top-k (`options.vocab_size` is the config's request; the
        resolved V is `vocab_size`).
    """

    reports_bits_per_dim: ClassVar[bool] = True

    model: nn.Module
    data_shape: tuple[int, ...]
    vocab_size: int
    image: bool = True
    dequantized: bool = False
    options: AROptions = AROptions()

    @property
    def length(self) -> int:
        return math.prod(self.data_shape)

    def tokens(self, x: jax.Array) -> jax.Array:
        """The pipeline's examples `[B, ...]` as token sequences `[B, T]` int32."""
        if self.image:
            k = pixels.to_levels(x, levels=self.vocab_size, dequantized=self.dequantized)
        else:
            k = jnp.clip(jnp.round(x), 0, self.vocab_size - 1).astype(jnp.int32)
        return k.reshape(x.shape[0], -1)

    def from_tokens(self, tokens: jax.Array) -> jax.Array:
        """Token sequences `[B, T]` back to examples shaped like the data (images in [-1, 1])."""
        shaped = tokens.reshape(tokens.shape[0], *self.data_shape)
        if self.image:
            # XLA may divide by multiplying with the reciprocal, which can overshoot 1 by an ulp.
            return jnp.clip(pixels.to_signed(shaped, levels=self.vocab_size), -1.0, 1.0)
        return shaped.astype(jnp.float32)

    def logits(self, params: Any, tokens: jax.Array) -> jax.Array:
        """`[B, T, V]`: position i's distribution of token i given tokens < i."""
        return self.model.apply({"params": params}, shift_right(tokens, bos=self.vocab_size))

    # --- The family interface. ---

    def init(self, key: jax.Array) -> Any:
        return self.model.init(key, jnp.zeros((1, self.length), jnp.int32))["params"]

    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        """The exact NLL in nats per token (dimension), batch mean; metric `bits_per_dim`."""
        del keys  # The NLL is deterministic.
        tokens = self.tokens(batch["x"])  # [B, T]
        nll = jnp.mean(token_nll(self.logits(params, tokens), tokens))
        return nll, {"bits_per_dim": nll_to_bits_per_dim(nll)}

    def nll(self, params: Any, x: jax.Array) -> jax.Array:
        """-log p(x) per example in nats, `[B]` (bits/dim: / (T ln 2))."""
        tokens = self.tokens(x)
        return jnp.sum(token_nll(self.logits(params, tokens), tokens), axis=-1)

    def bits_per_dim(
        self, params: Any, key: jax.Array, x: jax.Array, labels: jax.Array | None, **options: Any
    ) -> tuple[jax.Array, jax.Array]:
        """The exact bits/dim `[B]` of test examples as the dataset stores them (integer pixel levels, or
        token values as floats), and the one network evaluation it took."""
        del key, labels, options  # Exact: no sampling, no options.
        tokens = jnp.clip(jnp.round(x), 0, self.vocab_size - 1).astype(jnp.int32).reshape(x.shape[0], -1)
        nll = jnp.sum(token_nll(self.logits(params, tokens), tokens), axis=-1)  # [B], nats
        return nll / (self.length * math.log(2.0)), jnp.asarray(1)

    def sample_tokens(self, params: Any, key: jax.Array, num: int, *, use_cache: bool = True) -> jax.Array:
        """`num` sequences `[num, T]`; token t is drawn with `fold_in(key, t)` either way.

        Args:
          params: the transformer's parameters.
          key: PRNG key.
          num: number of sequences.
          use_cache: decode one position per step with the key/value cache (O(T) per step); False
            recomputes the whole prefix each step (O(T^2) per step), the reference the cache must match.
        """
        draw = lambda t, logits: sample_logits(
            jax.random.fold_in(key, t), logits, temperature=self.options.temperature, top_k=self.options.top_k
        )
        bos = jnp.full((num,), self.vocab_size, jnp.int32)
        if use_cache:

            def step(carry, t):
                cache, previous = carry
                logits, cache = self.model.apply({"params": params}, previous, t, cache, method="decode")
                token = draw(t, logits)
                return (cache, token), token

            init = (self.model.init_cache(num), bos)
            _, tokens = jax.lax.scan(step, init, jnp.arange(self.length))
            return tokens.T  # [num, T]

        def recompute(inputs, t):
            logits = self.model.apply({"params": params}, inputs[:, :-1])  # [num, T, V]
            token = draw(t, jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False))
            return jax.lax.dynamic_update_slice_in_dim(inputs, token[:, None], t + 1, axis=1), token

        inputs = jnp.concatenate([bos[:, None], jnp.zeros((num, self.length), jnp.int32)], axis=1)
        _, tokens = jax.lax.scan(recompute, inputs, jnp.arange(self.length))
        return tokens.T

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        """`num` examples shaped like the data, sampled with the cache."""
        return self.from_tokens(self.sample_tokens(params, key, num))
