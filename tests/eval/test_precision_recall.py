"""Precision/recall and density/coverage: identities, monotone decay as sets separate, brute force."""

import numpy as np
import pytest

from gl_jax.eval.precision_recall import density_coverage, precision_recall


def _radii(a, k):
    d = np.linalg.norm(a[:, None] - a[None], axis=-1)
    return np.sort(d, axis=1)[:, k]  # index 0 is the point itself


def _brute_force(real, fake, k_pr, k_dc):
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # [N, M]
    r_real, r_fake = _radii(real, k_pr), _radii(fake, k_pr)
    precision = np.mean(np.any(d_rf <= r_real[:, None], axis=0))
    recall = np.mean(np.any(d_rf <= r_fake[None, :], axis=1))
    r = _radii(real, k_dc)
    density = np.sum(d_rf <= r[:, None]) / (k_dc * len(fake))
    coverage = np.mean(np.min(d_rf, axis=1) <= r)
    return precision, recall, density, coverage


def test_against_brute_force_with_chunking():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(120, 5)), rng.normal(size=(90, 5)) * 1.3 + 0.4
    want = _brute_force(real, fake, 3, 5)
    for chunk in (1024, 17):
        pr, dc = precision_recall(real, fake, chunk=chunk), density_coverage(real, fake, chunk=chunk)
        np.testing.assert_allclose([pr.precision, pr.recall, dc.density, dc.coverage], want, rtol=1e-12)


def test_identical_sets_are_fully_precise_and_covered():
    x = np.random.default_rng(1).normal(size=(300, 16)) + 100.0  # an offset, like non-negative features
    pr, dc = precision_recall(x, x), density_coverage(x, x)
    assert pr.precision == 1.0 and pr.recall == 1.0 and dc.coverage == 1.0
    assert dc.density >= 1.0  # each sample is in its own ball and in those of the points it is near


def test_metrics_fall_monotonically_as_the_sets_separate():
    rng = np.random.default_rng(2)
    real, base = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    rows = []
    for s in shifts:
        fake = base + s * np.eye(8)[0]
        pr, dc = precision_recall(real, fake), density_coverage(real, fake)
        rows.append([pr.precision, pr.recall, dc.density, dc.coverage])
    rows = np.asarray(rows)  # [shift, metric]
    assert np.all(rows[0, [0, 1, 3]] > 0.8) and rows[0, 2] == pytest.approx(1.0, abs=0.2)
    assert np.all(np.diff(rows, axis=0) <= 1e-12), rows
    assert np.all(rows[-1] < 0.01)
