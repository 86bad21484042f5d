"""Unbiased MMD, KID and RBF MMD against brute force and the closed form for Gaussians."""

import itertools

import numpy as np
import pytest

from gl_jax.eval.mmd import kernel_inception_distance, mmd2_unbiased, mmd_rbf, polynomial_kernel, rbf_kernel


def test_unbiased_estimator_by_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 0.3
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # KID's kernel
    xx = np.mean([k(x[i], x[j]) for i, j in itertools.permutations(range(6), 2)])
    yy = np.mean([k(y[i], y[j]) for i, j in itertools.permutations(range(5), 2)])
    xy = np.mean([k(a, b) for a in x for b in y])
    got = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    assert got == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    d = 32
    a, b = rng.normal(size=(1500, d)), rng.normal(size=(1500, d))
    same = kernel_inception_distance(a, b, num_subsets=50, subset_size=500)
    assert same.std > 0 and abs(same.mean) < 3 * same.std
    shifted = kernel_inception_distance(a, b + 0.3, num_subsets=50, subset_size=500)
    assert shifted.mean > 5 * shifted.std > 0
    # The subset draws are a function of the seed.
    assert kernel_inception_distance(
        a, b, num_subsets=5, subset_size=100, seed=3
    ) == kernel_inception_distance(a, b, num_subsets=5, subset_size=100, seed=3)


def test_kid_mean_of_many_independent_estimates_is_near_zero():
    """Unbiasedness itself: over disjoint sample pairs of one distribution the estimates average to 0
    within their standard error (a biased V-statistic would sit at a positive offset)."""
    rng = np.random.default_rng(2)
    estimates = []
    for _ in range(40):
        x, y = rng.normal(size=(100, 8)), rng.normal(size=(100, 8))
        estimates.append(
            mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
        )
    estimates = np.asarray(estimates)
    assert abs(estimates.mean()) < 3 * estimates.std() / np.sqrt(len(estimates))


def test_rbf_mmd_matches_the_gaussian_closed_form():
    """For x ~ N(m1, s1^2 I), y ~ N(m2, s2^2 I) in D dims and k = exp(-|x - y|^2 / (2 h^2)):
    E k(x, y) = (h^2 / (h^2 + s1^2 + s2^2))^(D/2) exp(-|m1 - m2|^2 / (2 (h^2 + s1^2 + s2^2)))."""
    d, h, s1, s2 = 2, 1.0, 1.0, 0.7
    m2 = np.array([1.0, 0.0])

    def ek(sa, sb, delta2):
        v = h**2 + sa**2 + sb**2
        return (h**2 / v) ** (d / 2) * np.exp(-delta2 / (2 * v))

    expected = ek(s1, s1, 0) + ek(s2, s2, 0) - 2 * ek(s1, s2, m2 @ m2)
    rng = np.random.default_rng(3)
    estimates = [
        mmd_rbf(rng.normal(size=(1000, d)) * s1, m2 + rng.normal(size=(1000, d)) * s2, bandwidth=h)
        for _ in range(5)
    ]
    assert np.mean(estimates) == pytest.approx(expected, abs=0.01)
    same = mmd_rbf(rng.normal(size=(1000, d)), rng.normal(size=(1000, d)))  # median-heuristic bandwidth
    assert abs(same) < 0.01


def test_rbf_kernel_values():
    x = np.array([[0.0, 0.0]])
    y = np.array([[3.0, 4.0]])
    assert rbf_kernel(x, y, bandwidth=5.0)[0, 0] == pytest.approx(np.exp(-0.5))
