"""k-NN manifold estimates of sample quality and diversity: precision/recall and density/coverage.

Both estimate each set's support as a union of balls around its points, each ball reaching to the point's
k-th nearest neighbour within its own set. Precision asks how many samples fall in the data's support
(fidelity), recall how many data points fall in the samples' support (diversity) (Kynkäänniemi et al.
2019, "Improved precision and recall metric for assessing generative models", section 3, k = 3).
Density counts how many data balls hold each sample, which is robust to outliers in the data that
inflate precision; coverage is the fraction of data balls holding at least one sample, which needs no
balls around samples (Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative
models", eqs. 4-5, k = 5). The papers use the FID Inception's pool_3 features (or VGG-16 fc2 features);
any feature vectors, or raw N-D points, work.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.eval.neighbours import kth_sq_distance, map_query_chunks, sq_distances

__all__ = ["DensityCoverage", "PrecisionRecall", "density_coverage", "precision_recall"]


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float


class DensityCoverage(NamedTuple):
    density: float
    coverage: float


def _centre(*sets: np.ndarray) -> list[np.ndarray]:
    # One shared shift for both sets (distances are unchanged), keeping float32 norms small.
    centre = np.asarray(sets[0], np.float32).mean(axis=0)
    return [np.asarray(s, np.float32) - centre for s in sets]


# Module-level jitted kernels (not closures), so repeated calls with the same shapes reuse one compile.
@jax.jit
def _in_any_ball(queries: jax.Array, centres: jax.Array, radii_sq: jax.Array) -> jax.Array:
    return jnp.any(sq_distances(queries, centres) <= radii_sq[None, :], axis=1)  # [chunk]


@jax.jit
def _balls_holding(queries: jax.Array, centres: jax.Array, radii_sq: jax.Array) -> jax.Array:
    return jnp.sum(sq_distances(queries, centres) <= radii_sq[None, :], axis=1)  # [chunk]


@jax.jit
def _holds_any(centres: jax.Array, radii_sq: jax.Array, points: jax.Array) -> jax.Array:
    return jnp.min(sq_distances(centres, points), axis=1) <= radii_sq  # [chunk]


def _fraction_in_balls(queries: np.ndarray, centres: np.ndarray, radii_sq: np.ndarray, chunk: int) -> float:
    """Fraction of queries within distance radius_j of at least one centre j."""
    c, r = jnp.asarray(centres), jnp.asarray(radii_sq, jnp.float32)
    return float(np.mean(map_query_chunks(lambda qc: _in_any_ball(qc, c, r), queries, chunk=chunk)))


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3, chunk: int = 1024) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of samples `fake` against data `real`.

    precision = fraction of fake points inside some ball B(r_i, NN_k(r_i)) around real points;
    recall = fraction of real points inside some ball B(f_j, NN_k(f_j)) around fake points, where
    NN_k(x) is the distance from x to its k-th nearest other point of its own set.

    Args:
      real: `[N, D]` data features.
      fake: `[M, D]` sample features.
      k: neighbourhood size (3 in the paper).
      chunk: query rows per device call.

    Returns:
      `PrecisionRecall(precision, recall)`, each in [0, 1]; both are 1 for identical sets.
    """
    real, fake = _centre(real, fake)
    real_radii = kth_sq_distance(real, real, k + 1, chunk=chunk)  # k + 1: each point is its own nearest.
    fake_radii = kth_sq_distance(fake, fake, k + 1, chunk=chunk)
    return PrecisionRecall(
        precision=_fraction_in_balls(fake, real, real_radii, chunk),
        recall=_fraction_in_balls(real, fake, fake_radii, chunk),
    )


def density_coverage(real: np.ndarray, fake: np.ndarray, *, k: int = 5, chunk: int = 1024) -> DensityCoverage:
    """Density and coverage (Naeem et al. 2020, eqs. 4-5) of samples `fake` against data `real`.

    density = 1 / (k M) sum_j sum_i 1[f_j in B(r_i, NN_k(r_i))];
    coverage = 1 / N sum_i 1[exists j: f_j in B(r_i, NN_k(r_i))].

    Args:
      real: `[N, D]` data features.
      fake: `[M, D]` sample features.
      k: neighbourhood size (5 in the paper).
      chunk: query rows per device call.

    Returns:
      `DensityCoverage(density, coverage)`: density is about 1 when samples follow the data's
      distribution (it is unbounded above), coverage is in [0, 1].
    """
    real, fake = _centre(real, fake)
    radii = kth_sq_distance(real, real, k + 1, chunk=chunk)  # [N]
    real_j, radii_j, fake_j = jnp.asarray(real), jnp.asarray(radii, jnp.float32), jnp.asarray(fake)
    counts = map_query_chunks(lambda fc: _balls_holding(fc, real_j, radii_j), fake, chunk=chunk)  # [M]
    radii32 = radii.astype(np.float32)
    coverage = map_query_chunks(lambda rc, rr: _holds_any(rc, rr, fake_j), real, radii32, chunk=chunk)  # [N]
    return DensityCoverage(density=float(counts.sum() / (k * len(fake))), coverage=float(np.mean(coverage)))
