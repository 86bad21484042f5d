"""Sliced Wasserstein against the Gaussian closed form and scipy's exact 1-D distance."""

import jax
import numpy as np
import pytest
import scipy.stats

from gl_jax.eval.wasserstein import sliced_wasserstein


def test_isotropic_gaussians_closed_form():
    """theta.x ~ N(theta.m, s^2) for unit theta, so SW_2^2 = E (theta.dm)^2 + (s1 - s2)^2
    = ||dm||^2 / D + (s1 - s2)^2."""
    d, n = 4, 10_000
    rng = np.random.default_rng(0)
    dm, s1, s2 = np.array([1.0, -1.0, 2.0, 0.0]), 1.0, 0.5
    x = rng.normal(size=(n, d)) * s1
    y = dm + rng.normal(size=(n, d)) * s2
    expected = np.sqrt(dm @ dm / d + (s1 - s2) ** 2)
    got = float(sliced_wasserstein(jax.random.key(0), x, y, num_projections=1000))
    assert got == pytest.approx(expected, rel=0.05)
    assert float(sliced_wasserstein(jax.random.key(1), x, x)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("sizes", [(50, 50), (37, 61)])
def test_one_dimension_is_exact(sizes):
    """In 1-D every direction is +-1, so SW_1 is the empirical W_1 (scipy), also for unequal sizes."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(sizes[0], 1)), rng.exponential(size=(sizes[1], 1))
    got = float(sliced_wasserstein(jax.random.key(0), x, y, num_projections=3, p=1.0))
    assert got == pytest.approx(scipy.stats.wasserstein_distance(x[:, 0], y[:, 0]), rel=1e-5)
