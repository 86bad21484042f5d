"""`config.eval.settings`: the ways of sampling `--mode eval` compares, checked and bound at the config edge.

Each setting names a sampler of `gl_jax.samplers.SAMPLERS`, its `steps`, its other keyword options and
optionally a thresholding method; an empty `config.eval.settings` evaluates the family's own sampling
(`config.sample`). `bind` turns a checked setting into the sampler function the family is given.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import ml_collections

from gl_jax.families import Family, Sampler
from gl_jax.families.build import bind_sampler, check_threshold
from gl_jax.registry import check_keys, plain
from gl_jax.samplers import SAMPLERS, THRESHOLDS
from gl_jax.spec import DataSpec

__all__ = ["EvalSetting", "eval_settings", "resolve", "bind"]

_SETTING_KEYS = ("sampler", "steps", "options", "threshold")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class EvalSetting:
    """One way of sampling to evaluate.

    Attributes:
      name: the setting's name (report key, grid file name, part of the sampling keys).
      sampler: a name in `SAMPLERS`, or None for the family's configured sampling (`config.sample`).
      steps: the sampler's `steps` (None with `sampler=None`).
      options: the sampler's other keyword options, `(name, value)` pairs sorted by name.
      threshold: thresholding of the denoised estimate ("none", "static", "dynamic"), or None for
        `config.sample.threshold`.
    """

    name: str
    sampler: str | None
    steps: int | None
    options: tuple[tuple[str, Any], ...] = ()
    threshold: str | None = None


def _sampler_options(sampler: str, options: Any, where: str, name_at: str) -> tuple[tuple[str, Any], ...]:
    """Checks keyword options against the sampler's; returns them as sorted, hashable pairs."""
    options = dict(plain(options or {}))
    SAMPLERS.check_options(sampler, options, where=where, name_at=name_at)
    return tuple(sorted(options.items()))


def eval_settings(config: ml_collections.ConfigDict) -> list[EvalSetting]:
    """The settings of `config.eval.settings`, checked; one setting `"sample"` when it is empty.

    Raises:
      ValueError: a bad name, a missing or unknown key, an unknown sampler (the valid ones named), an
        unknown sampler option, or steps < 1.
    """
    settings = config.eval.settings
    if not settings:
        return [EvalSetting("sample", None, None)]
    out = []
    for name, setting in settings.items():
        where = f"config.eval.settings.{name}"
        if not _NAME.match(name):
            raise ValueError(f"Setting name {name!r} must be letters, digits, '_', '-' or '.' (a file name).")
        if not isinstance(setting, ml_collections.ConfigDict | dict):
            raise ValueError(f"{where} must be a dict with keys {list(_SETTING_KEYS)}, got {setting!r}.")
        check_keys(setting, _SETTING_KEYS, where=where, what="an eval setting")
        if "sampler" not in setting or "steps" not in setting:
            raise ValueError(f"{where} needs 'sampler' and 'steps' (and optionally 'options', 'threshold').")
        sampler = setting["sampler"]
        steps = setting["steps"]
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{where}.steps must be an integer >= 1, got {steps!r}.")
        options = _sampler_options(sampler, setting.get("options"), f"{where}.options", f"{where}.sampler")
        threshold = setting.get("threshold")
        if threshold is not None:
            THRESHOLDS.lookup(threshold, where=f"{where}.threshold")
        out.append(EvalSetting(name, sampler, steps, options, threshold))
    return out


def resolve(
    setting: EvalSetting, config: ml_collections.ConfigDict, family: Family, spec: DataSpec
) -> EvalSetting:
    """The setting with `config.sample`'s sampler and threshold filled in where it leaves them open.

    Raises:
      ValueError: the setting names a sampler or a threshold but the family samples one way only, or a
        threshold for data that are not images.
    """
    own = setting.threshold is not None
    threshold = setting.threshold if own else config.sample.threshold
    if not family.takes_samplers:
        if setting.sampler is not None or threshold != "none":
            raise ValueError(
                f"Family {config.family!r} samples one way only; leave config.eval.settings empty and "
                f"config.sample.threshold 'none' (setting {setting.name!r})."
            )
        return setting
    where = f"config.eval.settings.{setting.name}.threshold" if own else "config.sample.threshold"
    check_threshold(threshold, spec, where=where)
    if setting.sampler is not None:
        return dataclasses.replace(setting, threshold=threshold)
    options = _sampler_options(
        config.sample.sampler, config.sample.options, "config.sample.options", "config.sample.sampler"
    )
    return dataclasses.replace(
        setting,
        sampler=config.sample.sampler,
        steps=config.sample.steps,
        options=options,
        threshold=threshold,
    )


def bind(setting: EvalSetting) -> Sampler:
    """The resolved setting's sampler with its steps and options bound."""
    where = f"config.eval.settings.{setting.name}"
    return bind_sampler(setting.sampler, steps=setting.steps, options=dict(setting.options), where=where)
