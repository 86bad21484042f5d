"""Chunked k-nearest-neighbour distances on device, shared by precision/recall and the memorisation score.

A 50k x 50k distance matrix does not fit in memory, so queries are processed in fixed-size chunks (the
last one padded, so each function compiles once) against the whole reference set. Distances are squared
Euclidean in float32, computed as ||a||^2 + ||b||^2 - 2 a.b after subtracting the reference set's mean:
centring leaves distances unchanged and keeps the norms, and so the cancellation error, small. The
distances `knn` returns are recomputed directly, ||q - r||^2, for the neighbours it found.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["kth_sq_distance", "knn", "map_query_chunks", "nearest", "sq_distances"]


def sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """Squared Euclidean distances `[N, M]` between rows of `a` `[N, D]` and `b` `[M, D]`, clipped at 0."""
    ab = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * ab, 0.0)


def map_query_chunks(
    fn: Callable[..., Any], queries: np.ndarray, *row_args: np.ndarray, chunk: int = 1024
) -> Any:
    """Applies jitted `fn(query_chunk, *row_arg_chunks)` to consecutive chunks of rows, concatenated.

    `row_args` are arrays aligned with `queries` row by row; `fn` returns an array or a tuple of arrays
    with one row per query. Every chunk has `chunk` rows (the last is padded with zeros and its padding
    dropped), so `fn` compiles once.
    """
    n = len(queries)
    chunk = max(1, min(chunk, n))
    out = []
    for start in range(0, n, chunk):
        parts = [np.asarray(a[start : start + chunk]) for a in (queries, *row_args)]
        pad = chunk - len(parts[0])
        if pad:
            parts = [np.concatenate([p, np.zeros((pad, *p.shape[1:]), p.dtype)]) for p in parts]
        out.append(jax.tree.map(lambda r, keep=chunk - pad: np.asarray(r)[:keep], fn(*parts)))
    return jax.tree.map(lambda *rs: np.concatenate(rs), *out)


def _centred(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, np.float32)
    centre = ref.mean(axis=0)
    return np.asarray(queries, np.float32) - centre, ref - centre


@partial(jax.jit, static_argnums=2)
def _knn_chunk(qc: jax.Array, ref: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    _, idx = jax.lax.top_k(-sq_distances(qc, ref), k)  # [chunk, k] candidates, by the expanded form
    diff = qc[:, None, :] - ref[idx]  # [chunk, k, D]
    sq = jnp.sum(diff * diff, axis=-1)  # [chunk, k], direct: an exact copy is at exactly 0
    order = jnp.argsort(sq, axis=1)  # re-sorted by the direct distances
    return jnp.take_along_axis(sq, order, 1), jnp.take_along_axis(idx, order, 1).astype(jnp.int32)


def knn(
    queries: np.ndarray, reference: np.ndarray, k: int, *, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of `reference` `[M, D]` for each query `[N, D]`, nearest first.

    Candidates are found with the expanded form; their distances are then recomputed as ||q - r||^2
    directly, so an exact copy is at distance 0 rather than at the expanded form's cancellation error.

    Returns:
      `(sq_distance [N, k] float32, index [N, k] int32)`.
    """
    if not 1 <= k <= len(reference):
        raise ValueError(f"k = {k} must be in [1, {len(reference)}]")
    q, ref = _centred(queries, reference)
    ref_j = jnp.asarray(ref)
    return map_query_chunks(lambda qc: _knn_chunk(qc, ref_j, k), q, chunk=chunk)


def kth_sq_distance(queries: np.ndarray, reference: np.ndarray, k: int, *, chunk: int = 1024) -> np.ndarray:
    """Squared distance `[N]` from each query `[N, D]` to its k-th nearest row of `reference` (k >= 1).

    When the queries are rows of the reference, each one is its own nearest neighbour at distance 0, so
    the k-th nearest *other* point is `kth_sq_distance(x, x, k + 1)`.
    """
    return knn(queries, reference, k, chunk=chunk)[0][:, -1]


def nearest(
    queries: np.ndarray, reference: np.ndarray, *, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest row of `reference` `[M, D]` for each query `[N, D]`: `(sq_distance [N], index [N])`."""
    sq, index = knn(queries, reference, 1, chunk=chunk)
    return sq[:, 0], index[:, 0]
