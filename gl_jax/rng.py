"""PRNG helpers shared by losses and the train step.

Randomness in a loss is drawn per example from per-example keys, so an example's noise depends only on the
step key and its position in the global batch, never on how the batch is split across devices: the sharded
`jax.jit` path and the `jax.pmap` path see identical noise and produce identical losses.
"""

from __future__ import annotations

import jax

__all__ = ["per_example_keys"]


def per_example_keys(key: jax.Array, batch_size: int) -> jax.Array:
    """Returns `[batch_size]` keys: `key` itself when it already is one key per example, else a split.

    Args:
      key: a single PRNG key, or a `[batch_size]` array of keys (as `make_train_step` passes).
      batch_size: number of examples.

    Returns:
      `[batch_size]` PRNG keys.
    """
    shape = key.shape if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key.shape[:-1]
    if shape == (batch_size,):
        return key
    if shape != ():
        raise ValueError(
            f"Expected one PRNG key or {batch_size} per-example keys, got keys of shape {shape}."
        )
    return jax.random.split(key, batch_size)
