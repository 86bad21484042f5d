"""ROC curve, AUC and TPR at a fixed FPR against counts done by hand and the trapezoid rule."""

import numpy as np
import pytest

from gl_jax.eval.detection import roc_auc, roc_curve, tpr_at_fpr


def test_auc_and_tpr_by_hand():
    negative, positive = np.arange(100.0), np.arange(100.0) + 50.0
    # Pairs with positive > negative: for positive 50 + i, the negatives below it number min(50 + i, 100).
    greater = sum(min(50 + i, 100) for i in range(100))
    assert roc_auc(negative, positive) == pytest.approx((greater + 0.5 * 50) / 10000)  # 50 ties.
    # At most 1 of the 100 negatives (99) may be above the threshold 98: positives 99..149 pass.
    assert tpr_at_fpr(negative, positive, 0.01) == pytest.approx(0.51)
    assert roc_auc(negative, negative + 1000) == 1.0
    assert roc_auc(negative + 1000, negative) == 0.0


def test_roc_curve_area_is_the_auc():
    rng = np.random.default_rng(0)
    negative = np.round(rng.normal(size=300), 1)  # Rounded: ties within and across the two sets.
    positive = np.round(rng.normal(1.0, size=200), 1)
    curve = roc_curve(negative, positive)
    assert curve.fpr[0] == curve.tpr[0] == 0.0 and curve.fpr[-1] == curve.tpr[-1] == 1.0
    assert np.all(np.diff(curve.fpr) >= 0) and np.all(np.diff(curve.tpr) >= 0)
    # The trapezoid rule through every threshold counts a tie as half a pair, as the Mann-Whitney AUC does.
    area = float(np.sum(np.diff(curve.fpr) * (curve.tpr[1:] + curve.tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc(negative, positive), abs=1e-12)
    # Each point is the fraction of scores at or above its threshold.
    k = len(curve.thresholds) // 2
    assert curve.fpr[k] == np.mean(negative >= curve.thresholds[k])
    assert curve.tpr[k] == np.mean(positive >= curve.thresholds[k])
