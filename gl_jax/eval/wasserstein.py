"""Sliced Wasserstein distance between two point clouds (for N-D data such as the toy distributions).

SW_p(P, Q)^p = E_theta W_p^p(theta#P, theta#Q) over directions theta uniform on the unit sphere, where
theta#P is the law of theta.x (Rabin et al. 2011, "Wasserstein barycenter and its application to texture
mixing"; Bonneel et al. 2015, "Sliced and Radon Wasserstein barycenters of measures"). Each 1-D W_p
between empirical measures is exact from sorted projections; the expectation over directions is a
Monte-Carlo average over `num_projections` random directions. The directions come from a JAX key; the
projections and sorts run in NumPy float64 (XLA's CPU sort is several times slower than NumPy's).
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["sliced_wasserstein"]


def _wasserstein_1d_pp(px: np.ndarray, py: np.ndarray, p: float) -> np.ndarray:
    """W_p^p between the empirical measures of `px` `[N, P]` and `py` `[M, P]`, per column: `[P]`.

    Exact for N != M too: the quantile functions are step functions with steps at i / N and j / M, so the
    integral over u in [0, 1] of |F^-1(u) - G^-1(u)|^p is a sum over the merged steps.
    """
    n, m = px.shape[0], py.shape[0]
    px, py = np.sort(px, axis=0), np.sort(py, axis=0)
    if n == m:  # Matching order statistics, each of mass 1 / N.
        return np.mean(np.abs(px - py) ** p, axis=0)
    steps = np.sort(np.concatenate([np.arange(1, n + 1) / n, np.arange(1, m + 1) / m]))  # [N + M]
    widths = np.diff(steps, prepend=0.0)
    mid = steps - widths / 2
    keep = widths > 0  # Steps shared by both grids appear twice.
    ix = np.minimum(np.floor(mid[keep] * n).astype(np.int64), n - 1)
    iy = np.minimum(np.floor(mid[keep] * m).astype(np.int64), m - 1)
    return np.sum(widths[keep][:, None] * np.abs(px[ix] - py[iy]) ** p, axis=0)


def sliced_wasserstein(
    key: jax.Array, x: np.ndarray, y: np.ndarray, *, num_projections: int = 256, p: float = 2.0
) -> float:
    """Monte-Carlo sliced p-Wasserstein distance SW_p between samples `x` `[N, D]` and `y` `[M, D]`.

    Args:
      key: PRNG key for the random directions.
      x, y: the two samples (flattened beyond the first axis).
      num_projections: number of random directions.
      p: the order of the distance.

    Returns:
      SW_p = (mean over directions of W_p^p)^(1/p). For x ~ N(m1, s1^2 I) and y ~ N(m2, s2^2 I) in D
      dimensions and p = 2, SW_2^2 -> ||m1 - m2||^2 / D + (s1 - s2)^2.
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    theta = np.asarray(jax.random.normal(key, (x.shape[1], num_projections)), np.float64)  # [D, P]
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)  # uniform on the sphere
    return float(np.mean(_wasserstein_1d_pp(x @ theta, y @ theta, p)) ** (1.0 / p))
