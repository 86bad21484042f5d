"""Counterfactual edits: a real image re-generated under another class, or from a partly noised start.

Two ways from an image x to an edit of it, both ending in a deterministic sampler:

- Inversion (t_start None): the probability-flow ODE from x up to T under x's own class (`invert`) gives
  the latent z that the same sampler maps back to x; sampling z back under another class
  (`sample_from_latent`) asks what x would have been had it been of that class, with what the latent holds
  of x -- pose, stroke, style -- kept (Song et al. 2021a, sec. 5.4; Su et al. 2023, "Dual Diffusion
  Implicit Bridges"). Under x's own class the round trip returns x up to the solver's error.
- SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
  Equations"): x noised to `t_start` by the forward process, x_t = alpha(t_start) x + sigma(t_start) eps,
  then sampled down from t_start, unconditionally or under a class. The larger `t_start`, the less of x
  survives: t_start = T is a fresh sample; small t_start a light touch.

A classifier's verdict on x and on its edit, when one is given, comes back with the edit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gl_jax.samplers.invert import invert, sample_from_latent
from gl_jax.sde import GaussianDiffusion

__all__ = ["EditResult", "counterfactual"]


class EditResult(NamedTuple):
    """What `counterfactual` returns.

    Attributes:
      x: `[B, ...]` the edits.
      z: `[B, ...]` the state they were sampled from: the latent at T (inversion) or the noised images at
        `t_start` (SDEdit).
      nfe: score evaluations, inversion and sampling together.
      before: the classifier's output on the images (`[B, K]` log-probabilities), or None.
      after: the classifier's output on the edits, or None.
    """

    x: jax.Array
    z: jax.Array
    nfe: jax.Array
    before: jax.Array | None
    after: jax.Array | None


def counterfactual(
    score_fn: Callable[..., jax.Array],
    sde: GaussianDiffusion,
    x: jax.Array,
    *,
    labels_from: Any = None,
    labels_to: Any = None,
    steps: int = 50,
    t_start: float | None = None,
    key: jax.Array | None = None,
    method: str = "ddim",
    grid: str | jax.Array = "uniform",
    rho: float = 7.0,
    classifier: Callable[[jax.Array], jax.Array] | None = None,
) -> EditResult:
    """Edits images `x`: inverted under `labels_from` and re-generated under `labels_to`, or SDEdit.

    Args:
      score_fn: `score_fn(x, t)`, or a class-conditional `score_fn(x, t, labels)` when labels are given
        (e.g. `lambda x, t, y: family.score_fn(params, y)(x, t)`).
      sde: the forward process.
      x: `[B, ...]` images (real or generated).
      labels_from: `[B]` the images' classes, for the inversion; None inverts with the unconditional
        `score_fn(x, t)`. Not used by SDEdit, which needs no inversion.
      labels_to: `[B]` the classes to re-generate under; None samples with `score_fn(x, t)`.
      steps: intervals of each deterministic solve (`invert`, `sample_from_latent`).
      t_start: None for the edit by inversion; a time in (t_min, T] for SDEdit from there.
      key: PRNG key of SDEdit's noise (required with `t_start`; unused without).
      method, grid, rho: the inversion and its matching sampler (`gl_jax.samplers.invert`; "ddim" is
        DDIM inversion and DDIM with eta = 0).
      classifier: `classifier(x) -> [B, K]` log-probabilities (or logits) of clean images, or None.

    Returns:
      `EditResult(x, z, nfe, before, after)`.
    """
    options = dict(steps=steps, method=method, grid=grid, rho=rho)
    if t_start is None:
        inverted = invert(score_fn, sde, x, labels=labels_from, **options)
        z, nfe = inverted.z, inverted.nfe
    else:
        if key is None:
            raise ValueError("SDEdit (t_start given) needs a key for the forward noise.")
        mean, std = sde.marginal(x, jnp.full((x.shape[0],), t_start))
        z, nfe = mean + std * jax.random.normal(key, x.shape), jnp.asarray(0)  # [B, ...]
    edited = sample_from_latent(score_fn, sde, z, t_start=t_start, labels=labels_to, **options)
    before = None if classifier is None else classifier(x)
    after = None if classifier is None else classifier(edited.x)
    return EditResult(edited.x, z, nfe + edited.nfe, before, after)
