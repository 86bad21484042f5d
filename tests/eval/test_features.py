"""The batched feature extractor, dataset statistics with their cache, and sampler scores.

These check the plumbing (padding, dtypes, caching, determinism) on a randomly initialised network with
a softmax head, so they need no converted weights; `test_inception.py` checks the weights themselves.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.eval import features
from gl_jax.eval.features import dataset_features, dataset_statistics, inception_extractor, sampler_scores
from gl_jax.eval.frechet import gaussian_statistics
from gl_jax.eval.inception import InceptionV3


@pytest.fixture(scope="module")
def extractor():
    """Random weights (He-scaled kernels, identity batch norm) drawn in NumPy: initialising through
    `init` would compile and run 22M truncated-normal draws, far slower on CPU."""
    x = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: InceptionV3(head=True).init(jax.random.key(0), x), x)["params"]
    rng = np.random.default_rng(0)

    def draw(path, s):
        name = path[-1].key
        if name == "kernel":
            return (rng.standard_normal(s.shape, np.float32) * np.sqrt(2.0 / np.prod(s.shape[:-1]))).astype(
                np.float32
            )
        return np.ones(s.shape, np.float32) if name == "var" else np.zeros(s.shape, np.float32)

    return inception_extractor(jax.tree_util.tree_map_with_path(draw, shapes), batch_size=2)


def _images(key, n):
    return jax.random.uniform(key, (n, 16, 16, 3), minval=-1.0, maxval=1.0)


def test_padding_and_batching_do_not_change_features(extractor):
    images = np.asarray(_images(jax.random.key(1), 3))
    whole = extractor(images)  # one full batch of 2, one padded batch of 1
    assert whole.pool.shape == (3, 2048) and whole.logits.shape == (3, 1008)
    assert np.abs(whole.pool[0] - whole.pool[1]).max() > 1e-3 * np.abs(whole.pool).max()
    single = extractor(images[2:])
    np.testing.assert_allclose(single.pool, whole.pool[2:], rtol=1e-5, atol=1e-6 * np.abs(whole.pool).max())


def test_dataset_statistics_are_cached(extractor, tmp_path):
    batches = [{"x": np.asarray(_images(jax.random.key(i), 2)), "label": np.zeros(2)} for i in range(3)]
    path = tmp_path / "stats" / "data.npz"
    stats = dataset_statistics(batches, extractor=extractor, cache_path=path, max_images=5)
    assert stats.num == 5 and path.exists()
    features = dataset_features(batches, extractor=extractor, max_images=5)
    want = gaussian_statistics(features.pool)
    np.testing.assert_allclose(stats.mu, want.mu, rtol=1e-10)
    np.testing.assert_allclose(stats.sigma, want.sigma, rtol=1e-8, atol=1e-12)

    def exploding():
        raise AssertionError("the cache should have been used")
        yield

    again = dataset_statistics(exploding(), extractor=extractor, cache_path=path)
    np.testing.assert_array_equal(again.sigma, stats.sigma)


def test_sampler_scores_are_deterministic_and_compare_to_the_reference(extractor, monkeypatch):
    key = jax.random.key(7)
    scores = sampler_scores(_images, key, extractor=extractor, num=6, batch_size=2, is_splits=2)
    assert scores.stats.num == 6 and scores.fid is None
    assert 1.0 <= scores.inception_score.mean <= 1008.0
    # The Fréchet distance itself is tested in test_frechet.py; here, that it gets the right statistics
    # (a 2048-d eigensolve of a singular covariance takes many seconds on a small CPU).
    calls = []
    monkeypatch.setattr(features, "fid", lambda a, b: calls.append((a, b)) or 0.0)
    reference = gaussian_statistics(np.random.default_rng(0).normal(size=(3, 2048)))
    again = sampler_scores(
        _images, key, extractor=extractor, num=6, batch_size=2, is_splits=2, reference=reference
    )
    assert again.fid == 0.0 and calls[0][1] is reference
    np.testing.assert_array_equal(calls[0][0].sigma, scores.stats.sigma)  # same key, same images
    assert again.inception_score == scores.inception_score
