"""Controllable generation: inpainting, colorization, classifier-free and classifier guidance.

Inpainting and colorization follow Song et al. 2021 (appendix I.2): run the predictor-corrector sampler and,
after every step at time s, replace the observed part of the state by the observation noised to s; the
last step puts the observation itself back, so observed values are kept exactly. Colorization is
inpainting in a decoupled colour space where one orthonormal channel is the grey level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.samplers.base import SampleResult, ScoreFn, start
from gl_jax.samplers.pc import pc_loop
from gl_jax.sde import GaussianDiffusion

__all__ = ["inpaint", "colorize", "guided_score", "classifier_guided_score", "COLOR_DECOUPLING"]

# An orthonormal 3x3 matrix whose first row is (1, 1, 1) / sqrt(3): the first decoupled channel of an RGB
# pixel (as a row vector times its transpose) is sqrt(3) times its grey level (mean of R, G, B).
COLOR_DECOUPLING = np.linalg.qr(np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [1.0, 1.0, -2.0]]).T)[0].T
COLOR_DECOUPLING = COLOR_DECOUPLING * np.sign(COLOR_DECOUPLING[0, 0])


def inpaint(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    known: jax.Array,
    mask: jax.Array,
    steps: int = 1000,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "uniform",
    rho: float = 7.0,
    **pc_options: Any,
) -> SampleResult:
    """Fills the unobserved part (`mask == 0`) of `known` by predictor-corrector sampling.

    Args:
      known: `[B, ...]` observations (values where `mask == 0` are ignored).
      mask: 1 where observed, 0 where to generate; broadcastable to `known`.
      **pc_options: `predictor`, `corrector`, `snr`, `n_corrector_steps` as in `pc_sampler`.
      key, score_fn, sde, shape, steps, x_init, t_start, grid, rho: the common sampler arguments
        (`gl_jax.samplers.base`); `shape` is `known`'s.

    Returns:
      `SampleResult(x, nfe)`; `x` equals `known` exactly where `mask == 1`.
    """
    if tuple(shape) != known.shape:
        raise ValueError(f"shape {tuple(shape)} differs from known's {known.shape}.")
    mask = jnp.broadcast_to(mask, known.shape).astype(known.dtype)
    key_init, key_loop = jax.random.split(key)

    def project(k, x, s):
        sb = jnp.full((x.shape[0],), s)
        mean, std = sde.marginal(known, sb)
        noised = mean + std * jax.random.normal(k, x.shape)
        return x * (1.0 - mask) + noised * mask

    x, ts = start(key_init, sde, shape, steps=steps, x_init=x_init, t_start=t_start, grid=grid, rho=rho)
    x = project(key_init, x, ts[0])
    _, x_mean, nfe = pc_loop(key_loop, score_fn, sde, x, ts, project=project, **pc_options)
    return SampleResult(x_mean * (1.0 - mask) + known * mask, nfe)


def colorize(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    gray: jax.Array,
    x_init: jax.Array | None = None,
    **options: Any,
) -> SampleResult:
    """Colours grey images: inpainting of the grey channel in the decoupled colour space.

    Args:
      gray: `[B, H, W, 1]` grey levels (the mean of R, G and B, in the data's scale).
      **options: `inpaint`'s other keyword options.
      key, score_fn, sde, shape, x_init: the common sampler arguments (`gl_jax.samplers.base`);
        `score_fn` is the score of RGB images, `shape` is `[B, H, W, 3]` and `x_init` is RGB.

    Returns:
      `SampleResult(x, nfe)` with RGB `x` `[B, H, W, 3]` whose channel mean equals `gray`.
    """
    m = jnp.asarray(COLOR_DECOUPLING, gray.dtype)  # Rows: orthonormal basis; row 0 is the grey direction.

    def decoupled_score(y, t):
        # x = y M (pixels as row vectors) and M is orthonormal, so grad_y = grad_x M^T.
        return score_fn(y @ m, t) @ m.T

    known = jnp.concatenate([jnp.sqrt(3.0) * gray, jnp.zeros(gray.shape[:-1] + (2,), gray.dtype)], -1)
    mask = jnp.asarray([1.0, 0.0, 0.0], gray.dtype)
    y_init = None if x_init is None else x_init @ m.T
    result = inpaint(key, decoupled_score, sde, shape, known=known, mask=mask, x_init=y_init, **options)
    return SampleResult(result.x @ m, result.nfe)


def guided_score(
    score_fn: Callable[[jax.Array, jax.Array, Any], jax.Array], cond: Any, *, w: float, null_cond: Any = None
) -> ScoreFn:
    """Classifier-free guidance: s_u + w (s_c - s_u) (Ho & Salimans 2022, eq. 6 with their w + 1 = our w).

    w = 0 is the unconditional score, w = 1 the conditional one, w > 1 extrapolates towards the condition.

    Args:
      score_fn: `score_fn(x, t, c)`; `c = null_cond` asks for the unconditional score (the dropped label).
      cond: the condition, e.g. `[B]` labels.
      w: guidance weight.
      null_cond: the condition value meaning "none".

    Returns:
      `score(x, t)`.
    """

    def score(x, t):
        uncond = score_fn(x, t, null_cond)
        return uncond + w * (score_fn(x, t, cond) - uncond)

    return score


def classifier_guided_score(
    score_fn: ScoreFn,
    log_prob_fn: Callable[[jax.Array, jax.Array], jax.Array],
    labels: jax.Array,
    *,
    scale: float = 1.0,
) -> ScoreFn:
    """Classifier guidance: s(x, t) + scale * grad_x log p_t(y | x) (Song et al. 2021, eq. 14; Dhariwal &
    Nichol 2021, sec. 4).

    Args:
      score_fn: unconditional `score(x, t)`.
      log_prob_fn: a noise-conditional classifier, `log_prob_fn(x, t) -> [B, num_classes]` log-probabilities.
      labels: `[B]` int class labels to guide towards.
      scale: guidance scale (1 samples the exact class-conditional when the classifier is exact).

    Returns:
      `score(x, t)`.
    """

    def log_p(x, t):
        logp = log_prob_fn(x, t)  # [B, C]
        return jnp.sum(jnp.take_along_axis(logp, labels[:, None], axis=-1))

    def score(x, t):
        return score_fn(x, t) + scale * jax.grad(log_p)(x, t)

    return score
