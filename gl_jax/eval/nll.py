"""Mean negative log-likelihood of held-out points under a model with an exact log-density.

Library-only: for researchers' own scripts and notebooks; no config uses it (`--mode eval` reports
bits/dim through `Family.bits_per_dim`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

__all__ = ["NLL", "mean_nll"]


class NLL(NamedTuple):
    """Mean of -log p(x) over the points, its standard error, and the number of points."""

    mean: float
    stderr: float
    num: int


def mean_nll(
    log_prob_fn: Callable[[jax.Array], jax.Array], x: np.ndarray, *, batch_size: int | None = None
) -> NLL:
    """Average -log p(x) in nats, evaluated batch by batch.

    Args:
      log_prob_fn: maps `[B, ...]` points to `[B]` log-densities: an exact density (a toy distribution's
        `log_prob`, a flow), or a closure over `gl_jax.likelihood.ode_log_likelihood` for a diffusion
        model's probability-flow ODE. Jit it beforehand if it is to be compiled once.
      x: `[N, ...]` evaluation points.
      batch_size: points per call (all at once when None); the last batch may be smaller.

    Returns:
      `NLL(mean, stderr, num)`; stderr = std / sqrt(N). Divide by D ln 2 for bits per dimension.
    """
    x = np.asarray(x)
    n = len(x)
    batch_size = batch_size or n
    logp = np.concatenate(
        [
            np.asarray(log_prob_fn(x[i : i + batch_size]), np.float64).reshape(-1)
            for i in range(0, n, batch_size)
        ]
    )
    if logp.shape != (n,):
        raise ValueError(f"log_prob_fn must return one log-density per point, got {logp.shape} for {n}")
    stderr = float(logp.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return NLL(mean=float(-logp.mean()), stderr=stderr, num=n)
