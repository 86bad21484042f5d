"""Inception Score (Salimans et al. 2016, "Improved techniques for training GANs", section 4).

IS = exp(E_x KL(p(y | x) || p(y))), with p(y) the average of p(y | x) over the sample, computed on each of
`splits` consecutive parts of the sample and reported as the mean and standard deviation over parts, as in
the paper's code (10 splits of 50k samples). For published numbers p(y | x) is the softmax over all 1008
logits of TF's inception-2015-12-05, computed without the softmax layer's bias (`InceptionV3(head=True)`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ISResult", "inception_score", "inception_score_from_probs"]


class ISResult(NamedTuple):
    """Mean and standard deviation of the Inception Score over the splits."""

    mean: float
    std: float


def inception_score_from_probs(probs: np.ndarray, *, splits: int = 10) -> ISResult:
    """Inception Score of class probabilities `probs` `[N, C]` (rows sum to 1), over `splits` parts.

    Returns 1 when every image gets the same prediction, and C when predictions are one-hot and each
    class is predicted equally often within each part (its maximum).
    """
    p = np.asarray(probs, np.float64)
    n = p.shape[0]
    if n < splits:
        raise ValueError(f"need at least `splits` = {splits} samples, got {n}")
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]  # [n / splits, C]
        p_y = part.mean(axis=0, keepdims=True)  # [1, C]
        # 0 log 0 = 0: classes with p(y | x) = 0 add nothing, also where p(y) = 0.
        log_ratio = np.log(np.where(part > 0, part, 1.0)) - np.log(np.where(part > 0, p_y, 1.0))
        kl = (part * log_ratio).sum(axis=1)  # [n / splits]
        scores.append(np.exp(kl.mean()))
    return ISResult(mean=float(np.mean(scores)), std=float(np.std(scores)))


def inception_score(logits: np.ndarray, *, splits: int = 10) -> ISResult:
    """Inception Score from classifier logits `[N, C]` (softmax over all C classes, in float64).

    Args:
      logits: `[N, C]`; for IS proper, `InceptionOutputs.logits` of the FID Inception (C = 1008).
      splits: number of consecutive parts the score is computed on (10 in Salimans et al.).

    Returns:
      `ISResult(mean, std)` over the parts.
    """
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)  # Stable softmax.
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return inception_score_from_probs(probs, splits=splits)
