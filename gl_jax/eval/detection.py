"""How well a score separates two sets: the ROC curve, its area, and the true-positive rate at a fixed
false-positive rate.

Used for watermark detection (Wen et al. 2023 report AUC and TPR@1%FPR) and any other detector whose larger
score means "positive". Ties are handled as the Mann-Whitney statistic does (Hanley & McNeil 1982, "The
meaning and use of the area under a receiver operating characteristic (ROC) curve"): the AUC is
P(positive > negative) + P(positive = negative) / 2, which is also the area under the ROC curve drawn
through every distinct threshold.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["RocCurve", "roc_curve", "roc_auc", "tpr_at_fpr"]


class RocCurve(NamedTuple):
    """The ROC curve through every distinct threshold, from (0, 0) to (1, 1).

    Attributes:
      fpr: `[T + 2]` false-positive rates, increasing.
      tpr: `[T + 2]` true-positive rates, increasing.
      thresholds: `[T + 2]` the score at or above which an example is flagged (+inf first: none flagged;
        -inf last: all).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curve(negative: np.ndarray, positive: np.ndarray) -> RocCurve:
    """The ROC curve of scores `negative` `[N]` and `positive` `[P]` (larger: more likely positive).

    Args:
      negative: scores of the negative examples (e.g. unmarked images).
      positive: scores of the positive examples (e.g. watermarked images).

    Returns:
      `RocCurve(fpr, tpr, thresholds)`: at threshold s, an example is flagged when its score is >= s.
    """
    negative, positive = np.asarray(negative, np.float64), np.asarray(positive, np.float64)
    thresholds = np.unique(np.concatenate([negative, positive]))[::-1]  # [T], decreasing.
    # Counts of scores >= each threshold, by binary search in the sorted scores.
    fpr = (len(negative) - np.searchsorted(np.sort(negative), thresholds, side="left")) / len(negative)
    tpr = (len(positive) - np.searchsorted(np.sort(positive), thresholds, side="left")) / len(positive)
    return RocCurve(
        fpr=np.concatenate([[0.0], fpr, [1.0]]),
        tpr=np.concatenate([[0.0], tpr, [1.0]]),
        thresholds=np.concatenate([[np.inf], thresholds, [-np.inf]]),
    )


def roc_auc(negative: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted one half (the Mann-Whitney U / (N P)).

    Args:
      negative: `[N]` scores of the negatives.
      positive: `[P]` scores of the positives.

    Returns:
      The area under the ROC curve, in [0, 1].
    """
    negative, positive = np.asarray(negative, np.float64), np.asarray(positive, np.float64)
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def tpr_at_fpr(negative: np.ndarray, positive: np.ndarray, fpr: float = 0.01) -> float:
    """The largest fraction of positives above a threshold that at most `fpr` of the negatives exceed.

    Args:
      negative: `[N]` scores of the negatives.
      positive: `[P]` scores of the positives.
      fpr: the false-positive rate allowed (Wen et al. 2023 report 1%).

    Returns:
      The true-positive rate at that threshold.
    """
    negative = np.sort(np.asarray(negative, np.float64))[::-1]
    allowed = int(np.floor(fpr * len(negative)))  # Negatives that may score above the threshold.
    threshold = negative[allowed]
    return float(np.mean(np.asarray(positive) > threshold))
