"""Inception Score: its extremes and an independent computation."""

import numpy as np
import pytest
import scipy.stats

from gl_jax.eval.inception_score import inception_score, inception_score_from_probs


def test_constant_predictions_score_one():
    p = np.tile(np.random.default_rng(0).dirichlet(np.ones(10)), (100, 1))
    assert inception_score_from_probs(p).mean == pytest.approx(1.0, abs=1e-12)


def test_uniform_one_hot_predictions_score_the_number_of_classes():
    c, n = 10, 1000
    p = np.eye(c)[np.arange(n) % c]  # each split of 100 holds every class 10 times
    result = inception_score_from_probs(p, splits=10)
    assert result.mean == pytest.approx(c, rel=1e-12) and result.std == pytest.approx(0.0, abs=1e-9)
    # From logits: a large margin makes the softmax one-hot, without overflow.
    assert inception_score(1e4 * p, splits=10).mean == pytest.approx(c, rel=1e-9)


def test_against_kl_divergence_per_split():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 7)) * 2.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = [
        np.exp(np.mean([scipy.stats.entropy(row, part.mean(0)) for row in part])) for part in np.split(p, 3)
    ]
    result = inception_score(logits, splits=3)
    assert result.mean == pytest.approx(np.mean(scores), rel=1e-10)
    assert result.std == pytest.approx(np.std(scores), rel=1e-8)
