"""grain input pipelines over TFDS data sources: shard, shuffle, preprocess, batch; checkpointable.

A process reads its disjoint shard of a split from the random-access source once, decoded into host
memory (the datasets this targets fit: Fashion-MNIST is 47 MB, CIFAR-10 150 MB), then a `grain.MapDataset`
over example indices shuffles (a new order each epoch), batches, and preprocesses whole batches with
NumPy. The iterator state is one index, saved with the model and restored exactly after a restart.

Differentially private training draws its batches by Poisson sampling instead (`make_poisson_dataset`):
every example independently with a fixed probability, into a fixed number of slots with a mask.
"""

from __future__ import annotations

import grain
import numpy as np

from gl_jax import pixels
from gl_jax.spec import DataSpec

__all__ = ["load_arrays", "make_dataset", "make_poisson_dataset", "make_iterator", "preprocess_images"]


def preprocess_images(
    images: np.ndarray, *, levels: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Maps integer pixels in {0, ..., levels - 1} to [-1, 1] as float32.

    With `rng` given, adds uniform dequantization noise (Theis et al. 2016): x = (k + u) / levels with
    u ~ U[0, 1), so a density on [-1, 1]^D relates to the discrete likelihood by log(levels / 2) per
    dimension. Without it, x = k / (levels - 1): 0 maps to -1 and levels - 1 to 1.
    """
    if rng is not None:
        return pixels.dequantized(images, rng.uniform(size=images.shape).astype(np.float32), levels=levels)
    return pixels.to_signed(images, levels=levels)


def load_arrays(
    source, spec: DataSpec, *, shard_index: int = 0, shard_count: int = 1
) -> dict[str, np.ndarray]:
    """Reads and decodes one process's shard (examples `shard_index::shard_count`) into NumPy arrays.

    Returns:
      `{"x": [N, ...], "label": [N]}` (label when the dataset has one); images stay uint8.
    """
    indices = list(range(shard_index, len(source), shard_count))
    examples = (
        source.__getitems__(indices) if hasattr(source, "__getitems__") else [source[i] for i in indices]
    )
    key = "image" if spec.kind == "image" else "x"
    arrays = {"x": np.stack([np.asarray(e[key]) for e in examples])}
    if spec.num_classes is not None:
        arrays["label"] = np.asarray([e["label"] for e in examples], np.int32)
    return arrays


def make_dataset(
    arrays: dict[str, np.ndarray],
    spec: DataSpec,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    repeat: bool = True,
    flip: bool = False,
    dequantize: bool = False,
    drop_remainder: bool = True,
) -> grain.MapDataset:
    """The batched dataset over in-memory arrays (see `load_arrays`).

    Args:
      arrays: `{"x": [N, ...], "label": [N]}` of this process's shard.
      spec: the dataset's `DataSpec`.
      batch_size: examples per batch for this process.
      seed: shuffle and augmentation seed.
      shuffle: shuffle globally, with a new order each epoch.
      repeat: repeat forever.
      flip: random horizontal flips (images).
      dequantize: uniform dequantization (images).
      drop_remainder: drop a last partial batch.

    Returns:
      A `grain.MapDataset` of dicts `{"x": float32 [B, ...], "label": int32 [B]}` (label when present).
    """
    num = len(arrays["x"])
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if num < batch_size and drop_remainder:
        raise ValueError(
            f"A shard of {spec.name!r} has {num} examples, fewer than the batch size {batch_size}; "
            "lower config.data.batch_size."
        )
    ds = grain.MapDataset.range(num)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if repeat:
        ds = ds.repeat(None)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def gather(indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return _gather(arrays, spec, indices, rng, flip=flip, dequantize=dequantize)

    return ds.random_map(gather, seed=seed + 1)


def _gather(
    arrays: dict[str, np.ndarray],
    spec: DataSpec,
    indices: np.ndarray,
    rng: np.random.Generator,
    *,
    flip: bool,
    dequantize: bool,
) -> dict[str, np.ndarray]:
    """The examples `indices` as the model sees them: scaled (and dequantized, flipped) images."""
    x = arrays["x"][indices]  # [B, ...]
    if spec.kind == "image":
        x = preprocess_images(x, levels=spec.levels, rng=rng if dequantize else None)
        if flip:
            mirrored = rng.random(len(indices)) < 0.5  # [B]
            x = np.where(mirrored[:, None, None, None], x[:, :, ::-1], x)
    out = {"x": x.astype(np.float32)}
    if "label" in arrays:
        out["label"] = arrays["label"][indices]
    return out


def make_poisson_dataset(
    arrays: dict[str, np.ndarray],
    spec: DataSpec,
    *,
    expected_batch_size: float,
    max_batch_size: int,
    seed: int,
    flip: bool = False,
    dequantize: bool = False,
) -> grain.MapDataset:
    """Batches drawn by Poisson sampling, for differentially private training (`gl_jax.train.privacy`).

    Batch i: every one of the N examples joins independently with probability q = expected_batch_size / N,
    from a generator of (seed, i) alone, so batch i is the same after a restart. The drawn examples, in
    random order, fill the first of `max_batch_size` slots and have mask 1; the other slots repeat
    example 0 with mask 0. When more than `max_batch_size` are drawn, a uniformly random
    `max_batch_size` of them are kept (truncated Poisson sampling, which the accountant counts as such).
    Unlike `make_dataset` there are no epochs: an example may be in two consecutive batches or in none
    for a while, which is what the privacy analysis of Poisson sampling assumes.

    Args:
      arrays: `{"x": [N, ...], "label": [N]}`, the whole train split (one process draws the batches).
      spec: the dataset's `DataSpec`.
      expected_batch_size: B = qN; at most N.
      max_batch_size: M, the batch's fixed number of slots.
      seed: the sampling and augmentation seed.
      flip: random horizontal flips (images).
      dequantize: uniform dequantization (images).

    Returns:
      An endless `grain.MapDataset` of dicts `{"x": float32 [M, ...], "label": int32 [M], "mask":
      float32 [M]}` (label when present).
    """
    num = len(arrays["x"])
    if not 0 < expected_batch_size <= num:
        raise ValueError(
            f"The expected batch size {expected_batch_size} must be in (0, {num}], the examples of "
            f"{spec.name!r}; lower config.privacy.expected_batch_size."
        )
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}.")
    rate = expected_batch_size / num

    def draw(_, rng: np.random.Generator) -> dict[str, np.ndarray]:
        drawn = rng.permutation(np.flatnonzero(rng.random(num) < rate))  # Each example with probability q.
        kept = drawn[:max_batch_size]  # A uniformly random subset of M when more were drawn.
        indices = np.zeros(max_batch_size, np.int64)  # [M]
        indices[: len(kept)] = kept
        out = _gather(arrays, spec, indices, rng, flip=flip, dequantize=dequantize)
        out["mask"] = (np.arange(max_batch_size) < len(kept)).astype(np.float32)  # [M]
        return out

    return grain.MapDataset.range(1).repeat(None).random_map(draw, seed=seed)


def make_iterator(dataset: grain.MapDataset, *, num_threads: int = 2, prefetch: int = 4):
    """A prefetching iterator with `get_state()` / `set_state()` for checkpointing."""
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(dataset.to_iter_dataset(read))
