"""Thresholding of the denoised estimate: keeps every sampler's x0 prediction inside the data range.

A score s(x, t) implies the denoised estimate (Tweedie's formula) x0_hat = (x + sigma^2 s) / alpha. Near
t = T the VP SDE has alpha(1) ~ 0.0066, so a small error of an eps-predicting network becomes a large error
of x0_hat (the eps error times sigma / alpha ~ 150); the first solver steps carry it into x_t, which leaves
the region the network was trained on, and the sample ends as saturated noise. For data in [-1, 1] the
exact x0_hat = E[x0 | x_t] lies in [-1, 1] (a mean of points of the data's range), so bringing x0_hat
back into that range changes nothing for an exact score and removes the part of a learned one's error
that points outside. Two published ways:

- "static": clip x0_hat to [-1, 1] (Ho et al. 2020 clip the predicted x0 when sampling; Saharia et al.
  2022, section 2.3, name it static thresholding).
- "dynamic": per example, s = max(1, the `percentile` quantile of abs(x0_hat)); x0_hat <- clip(x0_hat, -s, s)
  / s (Saharia et al. 2022, section 2.3; their percentile 99.5%).

The wrapper acts on the score, so it works with every sampler (data-prediction solvers such as
DPM-Solver++ recover exactly the thresholded x0_hat from it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gl_jax.parametrization import convert
from gl_jax.registry import Registry
from gl_jax.samplers.base import ScoreFn
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = ["THRESHOLDS", "threshold_x0", "thresholded_score"]


def _static(x0: jax.Array, *, percentile: float) -> jax.Array:
    del percentile
    return jnp.clip(x0, -1.0, 1.0)


def _dynamic(x0: jax.Array, *, percentile: float) -> jax.Array:
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile}.")
    flat = jnp.abs(x0.reshape(x0.shape[0], -1))  # [B, D]
    s = broadcast_to_data(jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.0), x0)  # [B, 1, ...]
    return jnp.clip(x0, -s, s) / s


# Names a config may use for `config.sample.threshold` (and an eval setting's `threshold`), each the
# thresholding of `x0` `[B, ...]`; "none" leaves the score alone.
THRESHOLDS = Registry("threshold", {"none": None, "static": _static, "dynamic": _dynamic})


def threshold_x0(x0: jax.Array, *, method: str, percentile: float = 0.995) -> jax.Array:
    """Brings denoised estimates `x0` `[B, ...]` into [-1, 1] by static or dynamic thresholding.

    Args:
      x0: denoised estimates, `[B, ...]`, data scaled to [-1, 1].
      method: a name in `THRESHOLDS`: "none", "static" (clip to [-1, 1]) or "dynamic" (Saharia et al.
        2022: per example, clip to [-s, s] and divide by s, s = max(1, quantile of abs(x0) at `percentile`)).
      percentile: the quantile of "dynamic", in (0, 1].

    Returns:
      The thresholded estimates, shaped like `x0`.
    """
    fn = THRESHOLDS[method]
    return x0 if fn is None else fn(x0, percentile=percentile)


def thresholded_score(
    score_fn: ScoreFn, sde: GaussianDiffusion, *, method: str = "static", percentile: float = 0.995
) -> ScoreFn:
    """The score whose denoised estimate is `score_fn`'s, thresholded into [-1, 1].

    s'(x, t) = (alpha(t) threshold(x0_hat) - x) / sigma(t)^2 with x0_hat = (x + sigma(t)^2 s(x, t)) /
    alpha(t), the Gaussian-perturbation identity both ways (Tweedie's formula).

    Args:
      score_fn: `score_fn(x, t) -> score`, `x` `[B, ...]` in the data's [-1, 1] scaling, `t` `[B]`.
      sde: the forward process (its `alpha` and `sigma`).
      method: "none" (returns `score_fn` itself), "static" or "dynamic"; see `threshold_x0`.
      percentile: the quantile of dynamic thresholding.

    Returns:
      `score(x, t)`, one evaluation of `score_fn` per call.
    """
    threshold = THRESHOLDS[method]
    if threshold is None:
        return score_fn

    def score(x: jax.Array, t: jax.Array) -> jax.Array:
        alpha = broadcast_to_data(sde.alpha(t), x)  # [B, 1, ...]
        sigma = broadcast_to_data(sde.sigma(t), x)
        s = score_fn(x, t)
        # alpha = 0 (rectified flow at t = 1): x_t holds no signal and the score does not depend on x0.
        has_signal = alpha > 1e-12
        between = dict(x_t=x, alpha=jnp.where(has_signal, alpha, 1.0), sigma=sigma)
        x0 = threshold(convert(s, source="score", target="x0", **between), percentile=percentile)
        return jnp.where(has_signal, convert(x0, source="x0", target="score", **between), s)

    return score
