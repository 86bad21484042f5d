"""Fréchet distance between Gaussians fitted to feature sets, and FID (Heusel et al. 2017).

FID = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)) between the Gaussians fitted to the
FID Inception's pool_3 features of two image sets (Heusel et al. 2017, "GANs trained by a two time-scale
update rule converge to a local Nash equilibrium", eq. 6; the Fréchet distance of two Gaussians is from
Dowson & Landau 1982). Everything here is NumPy float64: FID differences that matter (tenths of a point)
are far below float32's rounding of 2048x2048 covariance products.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from gl_jax import files

__all__ = [
    "FeatureStats",
    "StatsAccumulator",
    "fid",
    "frechet_distance",
    "gaussian_statistics",
    "load_stats",
    "save_stats",
    "trace_sqrt_product",
]


class FeatureStats(NamedTuple):
    """A Gaussian fitted to N feature vectors.

    Attributes:
      mu: `[D]` float64 mean.
      sigma: `[D, D]` float64 unbiased covariance (divided by N - 1, like `np.cov`).
      num: N, the number of feature vectors.
    """

    mu: np.ndarray
    sigma: np.ndarray
    num: int


def gaussian_statistics(features: np.ndarray) -> FeatureStats:
    """Mean and unbiased covariance of `features` `[N, D]`, in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {f.shape}")
    return FeatureStats(mu=f.mean(axis=0), sigma=np.cov(f, rowvar=False), num=f.shape[0])


class StatsAccumulator:
    """Streaming mean and covariance over batches of features, so 50k x 2048 features need not be kept.

    Batches are merged with Chan et al.'s pairwise update (1979, "Updating formulae and a pairwise
    algorithm for computing sample variances") in float64: each batch's scatter about its own mean, plus
    the between-batch term, which avoids the cancellation of the one-pass E[x x^T] - mu mu^T.
    """

    def __init__(self) -> None:
        self.num = 0
        self._mean: np.ndarray | None = None
        self._scatter: np.ndarray | None = None  # [D, D], sum of (x - mean)(x - mean)^T

    def update(self, features: np.ndarray) -> None:
        """Adds a batch `[B, D]`."""
        f = np.asarray(features, np.float64)
        n_b = f.shape[0]
        if n_b == 0:
            return
        mean_b = f.mean(axis=0)
        centred = f - mean_b
        scatter_b = centred.T @ centred
        if self._mean is None:
            self.num, self._mean, self._scatter = n_b, mean_b, scatter_b
            return
        n_a, n = self.num, self.num + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._scatter = self._scatter + scatter_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.num = n

    def result(self) -> FeatureStats:
        """The `FeatureStats` of everything added so far (at least two vectors)."""
        if self.num < 2:
            raise ValueError(f"need at least 2 feature vectors, got {self.num}")
        return FeatureStats(mu=self._mean.copy(), sigma=self._scatter / (self.num - 1), num=self.num)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; eigenvalues rounded below zero are clipped to zero."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for PSD S1, S2: the sum of sqrt(eigenvalues) of a symmetric PSD matrix similar to
    S1 S2.

    With S1 = L L^T (Cholesky), L^-1 (S1 S2) L = L^T S2 L (or the same with S1 and S2 swapped); when
    both are singular (fewer samples than dimensions), sqrt(S1) S2 sqrt(S1) from an eigendecomposition.
    Either way a symmetric eigensolver returns real eigenvalues (those rounded below zero are clipped), so
    there is no eps-offset retry and no spurious imaginary part, unlike `scipy.linalg.sqrtm` of the
    non-symmetric product; the Cholesky path costs one symmetric eigensolve instead of two.
    """
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    # S1 S2 and S2 S1 have the same eigenvalues, so either factor may be the one that is decomposed.
    for a, b in ((sigma1, sigma2), (sigma2, sigma1)):
        try:
            root = np.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            continue
        m = root.T @ b @ root
        break
    else:
        root = _psd_sqrt(sigma1)
        m = root @ sigma2 @ root
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))  (Dowson & Landau 1982; FID is this
    on Inception features, Heusel et al. 2017, eq. 6).

    Args:
      mu1, mu2: `[D]` means.
      sigma1, sigma2: `[D, D]` symmetric PSD covariances.

    Returns:
      The distance as a Python float (float64 arithmetic throughout).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


def fid(samples: np.ndarray | FeatureStats, reference: np.ndarray | FeatureStats) -> float:
    """FID (Heusel et al. 2017, eq. 6): the one function every FID in gl_jax goes through.

    Either side is a feature set `[N, D]` or fitted `FeatureStats`. For a feature set of N <= D samples
    (few samples, 2048 features) the Gaussian fitted to it has the singular covariance S = A^T A / (N - 1),
    A the centred features `[N, D]`; then tr((S_r S)^(1/2)) is computed exactly from the N x N symmetric
    PSD matrix A S_r A^T / (N - 1), which has the nonzero eigenvalues of S_r S (XY and YX share them):
    one N x N eigensolve instead of two D x D ones, with no square roots of rounded zero eigenvalues.

    Args:
      samples: the samples' features or statistics.
      reference: the data's features or statistics (`gl_jax.eval.reference`).

    Returns:
      FID as a Python float (float64 arithmetic).
    """
    if not isinstance(reference, FeatureStats):
        reference = gaussian_statistics(reference)
    if isinstance(samples, FeatureStats):
        return frechet_distance(samples.mu, samples.sigma, reference.mu, reference.sigma)
    f = np.asarray(samples, np.float64)
    n, d = f.shape
    if n > d:
        stats = gaussian_statistics(f)
        return frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma)
    mu = f.mean(axis=0)
    a = f - mu  # [N, D]
    m = a @ reference.sigma @ a.T / (n - 1)  # [N, N]
    trace_sqrt = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None))))
    diff = mu - reference.mu
    trace_s = float(np.sum(a * a)) / (n - 1)
    return float(diff @ diff + trace_s + np.trace(reference.sigma) - 2.0 * trace_sqrt)


def save_stats(path: str | os.PathLike, stats: FeatureStats) -> None:
    """Writes `FeatureStats` to an `.npz` (keys `mu`, `sigma`, `num`), through a temporary file."""
    files.save_npz(os.fspath(path), mu=stats.mu, sigma=stats.sigma, num=np.int64(stats.num))


def load_stats(path: str | os.PathLike) -> FeatureStats:
    """Reads `FeatureStats` written by `save_stats` (or any `.npz` with `mu` and `sigma`)."""
    with np.load(os.fspath(path)) as f:
        num = int(f["num"]) if "num" in f.files else 0
        return FeatureStats(
            mu=np.asarray(f["mu"], np.float64), sigma=np.asarray(f["sigma"], np.float64), num=num
        )
