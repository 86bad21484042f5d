"""Fréchet distance and FID statistics against closed forms and an independent matrix square root."""

import numpy as np
import pytest
import scipy.linalg

from gl_jax.eval.frechet import (
    FeatureStats,
    StatsAccumulator,
    fid,
    frechet_distance,
    gaussian_statistics,
    load_stats,
    save_stats,
    trace_sqrt_product,
)


def _random_spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


def test_commuting_diagonal_covariances_closed_form():
    """For diagonal S1 = diag(a), S2 = diag(b): ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2."""
    rng = np.random.default_rng(0)
    d = 50
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_commuting_rotated_covariances_closed_form():
    """S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T share eigenvectors: the same closed form, non-diagonal."""
    rng = np.random.default_rng(1)
    d = 20
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(np.zeros(d), s1, np.zeros(d), s2) == pytest.approx(expected, rel=1e-10)


def test_non_commuting_covariances_against_scipy_sqrtm():
    rng = np.random.default_rng(2)
    d = 30
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d, scale=2.0)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    root = scipy.linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    # Symmetric in its arguments, like the distance it is.
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-10)


def test_two_by_two_non_commuting_by_hand():
    """S1 = diag(1, 0) (singular) and S2 = [[1, 1], [1, 2]]: sqrt(S1) S2 sqrt(S1) = diag(1, 0), so
    tr((S1 S2)^(1/2)) = 1 and d^2 = 1 + 3 - 2 = 2."""
    s1, s2 = np.diag([1.0, 0.0]), np.array([[1.0, 1.0], [1.0, 2.0]])
    assert trace_sqrt_product(s1, s2) == pytest.approx(1.0, abs=1e-12)
    assert frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(2.0, abs=1e-12)


@pytest.mark.parametrize("n", [2000, 40])  # 40 < D: singular covariance
def test_fid_of_a_set_against_itself_is_zero(n):
    f = np.random.default_rng(3).gamma(2.0, 0.5, size=(n, 64))  # non-negative, like pool_3 features
    scale = np.trace(np.cov(f, rowvar=False))
    assert abs(fid(f, f)) < 1e-6 * scale
    assert fid(f, f + 0.5) == pytest.approx(64 * 0.25, rel=1e-6)


def test_streaming_statistics_equal_batch_statistics():
    rng = np.random.default_rng(4)
    f = rng.normal(size=(1001, 16)) * 3.0 + 1e4  # a large offset: the two-pass merge keeps precision
    acc = StatsAccumulator()
    for part in np.split(f, [1, 100, 357, 1000]):
        acc.update(part)
    got, want = acc.result(), gaussian_statistics(f)
    assert got.num == want.num == 1001
    np.testing.assert_allclose(got.mu, want.mu, rtol=1e-14)
    np.testing.assert_allclose(got.sigma, want.sigma, rtol=1e-9, atol=1e-9)


def test_stats_round_trip_through_npz(tmp_path):
    stats = gaussian_statistics(np.random.default_rng(5).normal(size=(10, 3)))
    save_stats(tmp_path / "s.npz", stats)
    back = load_stats(tmp_path / "s.npz")
    assert isinstance(back, FeatureStats) and back.num == 10
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert fid(back, stats) == pytest.approx(0.0, abs=1e-12)
