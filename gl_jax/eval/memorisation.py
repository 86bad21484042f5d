"""Novelty of samples with respect to the training set: a nearest-neighbour distance ratio.

For a sample x with nearest training example t = NN_train(x), the ratio

    rho(x) = ||x - t|| / ||t - NN_train\\{t}(t)||

compares how close the sample is to the training set with how close that training example is to the
rest of the training set. rho = 0 is an exact copy; rho << 1 means the sample sits much closer to one
training example than the training data's own spacing there, the signature of memorisation; a model that
generalises puts samples about as far from the data as data points are from each other (rho of order 1
and above). Scaling by the local spacing makes one threshold usable in dense and sparse regions, in the
spirit of the nearest/second-nearest ratio test with threshold 1/3 used to flag copied samples by Yoon
et al. 2023 ("Diffusion probabilistic models generalize when they fail to memorize") and Gu et al. 2023
("On memorization in diffusion models"). Works on pixels, Inception features or N-D points.

Library-only: for researchers' own scripts and notebooks; no config or `--mode eval` report uses it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gl_jax.eval.neighbours import kth_sq_distance, nearest

__all__ = ["Novelty", "memorised_fraction", "novelty"]


class Novelty(NamedTuple):
    """Per-sample nearest-neighbour statistics.

    Attributes:
      ratio: `[N]` rho(x) above (inf where the nearest training example has an exact duplicate in the
        training set and x is not that point; 0 for exact copies).
      distance: `[N]` distance to the nearest training example.
      index: `[N]` index of the nearest training example.
    """

    ratio: np.ndarray
    distance: np.ndarray
    index: np.ndarray


def novelty(samples: np.ndarray, train: np.ndarray, *, chunk: int = 1024) -> Novelty:
    """The nearest-neighbour ratio rho of each sample `[N, D]` against training examples `[M, D]` (M >= 2).

    Returns:
      `Novelty(ratio, distance, index)`, each `[N]`.
    """
    samples = np.asarray(samples, np.float32).reshape(len(samples), -1)
    train = np.asarray(train, np.float32).reshape(len(train), -1)
    d2, index = nearest(samples, train, chunk=chunk)
    # Spacing only at the training examples that are someone's nearest: k = 2 skips the point itself.
    used, inverse = np.unique(index, return_inverse=True)
    spacing = np.sqrt(kth_sq_distance(train[used], train, 2, chunk=chunk))[inverse]  # [N]
    distance = np.sqrt(d2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(distance == 0, 0.0, distance / spacing)
    return Novelty(ratio=ratio, distance=distance, index=index)


def memorised_fraction(ratio: np.ndarray, *, threshold: float = 1.0 / 3.0) -> float:
    """Fraction of samples with rho below `threshold` (1/3 by the convention cited in the module doc)."""
    return float(np.mean(np.asarray(ratio) < threshold))
