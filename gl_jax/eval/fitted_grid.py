"""Time steps fitted to the evaluated model, for an eval setting with `options.grid = "fitted"`, cached.

`gl_jax.samplers.fit_time_steps` chooses a sampler's n-step grid for one model (GITS's dynamic programming,
then the sampler's own endpoint error). The fit costs minutes and depends only on the model, the sampler
and its options, so `--mode eval` fits it once per checkpoint and setting and keeps it in
`<workdir>/eval/time_steps/<setting>.json` with what it was fitted for; a later evaluation of the same
checkpoint reads it, and another checkpoint or sampler fits anew. The setting then samples with the array
(`grid=` of every sampler), and the report lists it among the setting's options.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax import files
from gl_jax.eval.settings import EvalSetting
from gl_jax.families import Family, LatentDiffusion, ScoreDiffusion
from gl_jax.samplers import SAMPLERS, fit_time_steps

__all__ = ["FITTED", "fitted_setting"]

log = logging.getLogger(__name__)

FITTED = "fitted"  # The value of a setting's `options.grid` that asks for a fitted grid.


def _diffusion(family: Family, params: Any) -> tuple[ScoreDiffusion, Any]:
    """The diffusion family whose score the grid is fitted to, and its parameters."""
    if isinstance(family, ScoreDiffusion):
        return family, params
    if isinstance(family, LatentDiffusion):
        return family.diffusion, params["diffusion"]
    raise ValueError(
        f"grid='fitted' fits time steps to a diffusion model's score; family {type(family).__name__} has "
        "none. Use a named grid (uniform, logsnr, karras) for it."
    )


def fitted_setting(
    family: Family,
    params: Any,
    setting: EvalSetting,
    *,
    fingerprint: dict,
    folder: str,
    key: jax.Array,
    batch_size: int,
) -> EvalSetting:
    """`setting` with `options.grid = "fitted"` replaced by the grid fitted to `params` (read from `folder`
    when it was fitted for the same `fingerprint`); any other setting unchanged.

    Args:
      family: the evaluated family (a diffusion or latent diffusion family).
      params: the parameters being evaluated.
      setting: a resolved eval setting.
      fingerprint: what the model's parameters are (checkpoint step, EMA or raw): the cache's key with the
        setting's sampler, steps and other options.
      folder: where fitted grids are kept (`<workdir>/eval/time_steps`).
      key: PRNG key of the fitting batch.
      batch_size: the fitting batch's size.

    Raises:
      ValueError: the family has no diffusion score to fit to.
    """
    options = dict(setting.options)
    if options.get("grid") != FITTED:
        return setting
    del options["grid"]
    diffusion, diffusion_params = _diffusion(family, params)
    wanted = files.canonical(
        {
            **fingerprint,
            "sampler": setting.sampler,
            "steps": setting.steps,
            "options": options,
            "threshold": setting.threshold,
            "batch_size": batch_size,
        }
    )
    path = os.path.join(folder, f"{setting.name}.json")
    grid = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                saved = json.load(f)
            if saved.get("fitted_for") == wanted:
                grid = saved["grid"]
        except (OSError, ValueError, KeyError):
            grid = None  # Unreadable: fitted again and rewritten below.
    if grid is None:
        log.info("Fitting the %d-step time grid of setting %r to the model.", setting.steps, setting.name)
        labels = None
        if diffusion.num_classes:
            labels = jnp.arange(batch_size) % diffusion.num_classes
        sampler = functools.partial(SAMPLERS[setting.sampler], **options)
        fitted = fit_time_steps(
            key,
            diffusion.score_fn(diffusion_params, labels),
            diffusion.sde,
            (batch_size, *diffusion.data_shape),
            steps=setting.steps,
            sampler=sampler,
        )
        grid = [float(t) for t in np.asarray(fitted, np.float64)]
        files.write_json(path, {"fitted_for": wanted, "grid": grid})
    return dataclasses.replace(setting, options=tuple(sorted({**options, "grid": tuple(grid)}.items())))
