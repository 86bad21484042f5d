"""Maximum mean discrepancy: the unbiased estimator, KID (cubic kernel on Inception features) and RBF MMD.

MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y) for a kernel k (Gretton et al. 2012, "A kernel
two-sample test", JMLR). Its unbiased U-statistic (their eq. 3) leaves out the diagonal terms
k(x_i, x_i), so its mean is exactly MMD^2: zero when both samples come from one distribution, and it can
be negative. KID (Binkowski et al. 2018, "Demystifying MMD GANs", section 4) is this estimator with the
kernel k(x, y) = (x.y / d + 1)^3 on the FID Inception's features, averaged over random subsets. NumPy
float64 throughout.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "KIDResult",
    "kernel_inception_distance",
    "median_bandwidth",
    "mmd2_unbiased",
    "mmd_rbf",
    "polynomial_kernel",
    "rbf_kernel",
]


def polynomial_kernel(x: np.ndarray, y: np.ndarray, *, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (x.y / d + coef0)^degree for `x` `[N, D]`, `y` `[M, D]`; returns `[N, M]`.

    KID's kernel with the defaults (Binkowski et al. 2018): the cubic kernel compares the first three
    moments of the feature distributions.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return (x @ y.T / x.shape[1] + coef0) ** degree


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T  # [N, M]
    return np.maximum(d2, 0.0)


def rbf_kernel(x: np.ndarray, y: np.ndarray, *, bandwidth: float) -> np.ndarray:
    """k(x, y) = exp(-||x - y||^2 / (2 h^2)) for `x` `[N, D]`, `y` `[M, D]`; returns `[N, M]`."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return np.exp(-_sq_dists(x, y) / (2.0 * bandwidth**2))


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """The median heuristic: h = median pairwise distance within the pooled sample (Gretton et al. 2012)."""
    z = np.concatenate([np.asarray(x, np.float64), np.asarray(y, np.float64)])
    d2 = _sq_dists(z, z)[np.triu_indices(len(z), k=1)]
    return float(np.sqrt(np.median(d2)))


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2 from kernel matrices `[N, N]`, `[M, M]`, `[N, M]` (Gretton et al. 2012, eq. 3).

    sum_{i != j} k(x_i, x_j) / (N (N - 1)) + sum_{i != j} k(y_i, y_j) / (M (M - 1))
    - 2 sum_{i, j} k(x_i, y_j) / (N M).
    """
    n, m = k_xx.shape[0], k_yy.shape[0]
    if n < 2 or m < 2:
        raise ValueError("the unbiased MMD estimator needs at least 2 samples on each side")
    xx = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(xx + yy - 2.0 * k_xy.mean())


class KIDResult(NamedTuple):
    """KID as reported in Binkowski et al. 2018: the mean over subsets and its spread.

    Attributes:
      mean: average of the subsets' unbiased MMD^2 estimates.
      std: standard deviation of those estimates (of one subset's estimate, not of the mean; subsets
        overlap, so they are not independent).
    """

    mean: float
    std: float


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KIDResult:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, over random subsets.

    Each of `num_subsets` subsets draws `subset_size` vectors from each set without replacement (fewer
    when a set is smaller), as in the paper's code; the defaults are its 100 subsets of 1000.

    Args:
      features1, features2: `[N, D]` and `[M, D]` features (pool_3 of the FID Inception for KID proper).
      num_subsets: number of random subsets.
      subset_size: vectors per subset and side.
      seed: NumPy seed of the subset draws.

    Returns:
      `KIDResult(mean, std)`; KID is conventionally reported x 1000.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets)
    for s in range(num_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        estimates[s] = mmd2_unbiased(
            polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        )
    return KIDResult(mean=float(estimates.mean()), std=float(estimates.std()))


def mmd_rbf(x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 between samples `x` `[N, D]` and `y` `[M, D]` with a Gaussian RBF kernel.

    Args:
      x, y: the two samples (e.g. model samples and data, for N-D toy problems).
      bandwidth: kernel width h in exp(-||x - y||^2 / (2 h^2)); the median heuristic when None (pass a
        fixed h to compare numbers across models).

    Returns:
      The unbiased estimate of MMD^2 (Gretton et al. 2012, eq. 3); it can be slightly negative.
    """
    h = median_bandwidth(x, y) if bandwidth is None else bandwidth
    return mmd2_unbiased(
        rbf_kernel(x, x, bandwidth=h), rbf_kernel(y, y, bandwidth=h), rbf_kernel(x, y, bandwidth=h)
    )
