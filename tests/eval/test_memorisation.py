"""The nearest-neighbour novelty ratio: copies, near-copies, fresh samples, brute force."""

import numpy as np
import pytest

from gl_jax.eval.memorisation import memorised_fraction, novelty


def _brute_force_ratio(samples, train):
    d = np.linalg.norm(samples[:, None] - train[None], axis=-1)
    idx = d.argmin(1)
    dt = np.linalg.norm(train[:, None] - train[None], axis=-1)
    np.fill_diagonal(dt, np.inf)
    return d.min(1) / dt.min(1)[idx], idx


def test_copies_near_copies_and_fresh_samples():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(500, 10))
    copies = novelty(train[:50], train)
    assert np.all(copies.ratio == 0) and np.array_equal(copies.index, np.arange(50))
    assert memorised_fraction(copies.ratio) == 1.0
    near = train[:50] + 1e-2 * rng.normal(size=(50, 10))
    assert memorised_fraction(novelty(near, train).ratio) == 1.0
    fresh = novelty(rng.normal(size=(200, 10)), train)
    assert memorised_fraction(fresh.ratio) < 0.05 and np.median(fresh.ratio) > 0.7


def test_against_brute_force():
    rng = np.random.default_rng(1)
    train, samples = rng.normal(size=(80, 4)), rng.normal(size=(30, 4)) * 1.5
    ratio, idx = _brute_force_ratio(samples, train)
    got = novelty(samples, train, chunk=8)
    np.testing.assert_array_equal(got.index, idx)
    np.testing.assert_allclose(got.ratio, ratio, rtol=1e-4)
    assert got.distance.shape == (30,)


def test_images_are_flattened():
    rng = np.random.default_rng(2)
    train = rng.uniform(-1, 1, size=(20, 4, 4, 1))
    assert novelty(train[:3], train).ratio == pytest.approx(np.zeros(3))
