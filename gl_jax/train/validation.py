"""Every option of a config checked in one pass, before anything is built or compiled.

`check_config(config, mode=...)` raises one `ConfigError` whose message names the key, the value it has,
and what would be valid, e.g. "config.train.log_every=0 is invalid: it must be an integer >= 1". Checks
that depend on the devices (batch divisibility) follow in `gl_jax.train.experiment.check_devices`, still
before compilation; what the config edge of the families checks (`gl_jax.families.build`) is named there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections

from gl_jax.likelihood import TRACES
from gl_jax.samplers import THRESHOLDS
from gl_jax.train.optim import OPTIMIZERS, SCHEDULES
from gl_jax.train.posthoc_ema import MAX_SIGMA_REL
from gl_jax.train.precision import COMPUTE_DTYPES
from gl_jax.train.privacy import PRIVATE_FAMILIES, dp_options
from gl_jax.train.step import REMAT_POLICIES

__all__ = ["ConfigError", "check_config", "check_override_types", "MODES"]

MODES = ("train", "sample", "stats", "eval")


class ConfigError(ValueError):
    """An option of the config is out of range, of the wrong type, or unknown."""


# A rule: (predicate, what a valid value is).
Rule = tuple[Callable[[Any], bool], str]


def _int(low: int, high: int | None = None) -> Rule:
    def ok(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)

    return ok, f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")


def _number(low: float | None = None, high: float | None = None, *, open_low=False, open_high=False) -> Rule:
    def ok(v):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        if low is not None and (v <= low if open_low else v < low):
            return False
        return high is None or (v < high if open_high else v <= high)

    parts = []
    if low is not None:
        parts.append(f"{'>' if open_low else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if open_high else '<='} {high}")
    return ok, "a finite number" + (" " + " and ".join(parts) if parts else "")


def _bool() -> Rule:
    return (lambda v: isinstance(v, bool)), "True or False"


def _sigma_rels(*, allow_empty: bool) -> Rule:
    def ok(v):
        if not isinstance(v, tuple | list) or (not v and not allow_empty):
            return False
        return all(
            isinstance(x, int | float) and not isinstance(x, bool) and 0.0 < x <= MAX_SIGMA_REL for x in v
        )

    what = "a tuple" if allow_empty else "a non-empty tuple"
    return ok, f"{what} of relative EMA widths in (0, {MAX_SIGMA_REL}], e.g. (0.05, 0.10)"


def _interval() -> Rule:
    def ok(v):
        if not isinstance(v, tuple | list):
            return False
        if not v:
            return True
        numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        return len(v) == 2 and numbers and 0.0 <= v[0] < v[1]

    return ok, "() or a pair (sigma_lo, sigma_hi) of noise levels with 0 <= sigma_lo < sigma_hi"


def _choice(options) -> Rule:
    options = list(options)
    return (lambda v: v in options), f"one of {options}"


# Options every mode reads.
_COMMON = {
    "seed": _int(0),
    "data.batch_size": _int(1),
    "data.num_shards": _int(0),
    "distributed.num_processes": _int(0),
    "distributed.process_id": _int(-1),
    "distributed.initialization_timeout": _int(1),
    "distributed.cpu_collectives": _choice(("gloo", "mpi")),
    "sample.steps": _int(1),
    "sample.num_samples": _int(1),
    "sample.guidance": _number(),
    "sample.guidance_interval": _interval(),
    "sample.guide_weight": _number(),
    "sample.guide_step": _int(-1),
    "sample.guide_use_ema": _bool(),
    "sample.threshold": _choice(THRESHOLDS),
    "train.ema_decay": _number(0.0, 1.0),
    "mesh.data": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and (v == -1 or v >= 1),
        "an integer >= 1, or -1 for the devices config.mesh.fsdp leaves",
    ),
    "mesh.fsdp": _int(1),
}
_BY_MODE = {
    "train": {
        "train.num_steps": _int(1),
        "train.steps_per_call": _int(1),
        "train.log_every": _int(1),
        "train.checkpoint_every": _int(1),
        "train.eval_every": _int(0),
        "train.max_to_keep": _int(1),
        "train.on_nonfinite": _choice(("stop", "skip")),
        "train.compute_dtype": _choice(COMPUTE_DTYPES),
        "train.remat": _choice(REMAT_POLICIES),
        "optim.optimizer": _choice(OPTIMIZERS),
        "optim.schedule": _choice(SCHEDULES),
        "optim.lr": _number(0.0, open_low=True),
        "optim.b1": _number(0.0, 1.0, open_high=True),
        "optim.b2": _number(0.0, 1.0, open_high=True),
        "optim.eps": _number(0.0),
        "optim.weight_decay": _number(0.0),
        "optim.warmup_steps": _int(0),
        "optim.min_lr_ratio": _number(0.0, 1.0),
        "optim.grad_clip": _number(0.0),
        "optim.grad_accum_steps": _int(1),
        "privacy.enabled": _bool(),
        "privacy.clip_norm": _number(0.0, open_low=True),
        "privacy.noise_multiplier": _number(0.0, open_low=True),
        "privacy.expected_batch_size": _int(0),
        "privacy.multiplicity": _int(1),
        "privacy.delta": _number(0.0, 1.0, open_low=True, open_high=True),
        "privacy.target_epsilon": _number(0.0, open_low=True),
        "loss.uncertainty": _bool(),
        "posthoc_ema.every": _int(0),
        "posthoc_ema.sigma_rels": _sigma_rels(allow_empty=False),
    },
    "sample": {},
    "stats": {
        "stats.max_images": _int(0),
        "stats.num_features": _int(2),
        "eval.batch_size": _int(1),
    },
    "eval": {
        "stats.max_images": _int(0),
        "stats.num_features": _int(2),
        "eval.checkpoint_step": _int(-1),
        "eval.num_samples": _int(2),  # FID needs a covariance.
        "eval.batch_size": _int(1),
        "eval.kid_subsets": _int(1),
        "eval.kid_subset_size": _int(1),
        "eval.pr_neighbours": _int(1),
        "eval.is_splits": _int(1),
        "eval.bpd_examples": _int(0),
        "eval.grid_size": _int(0),
        "eval.bpd_trace": _choice(TRACES),
        "eval.bpd_rtol": _number(0.0, open_low=True),
        "eval.bpd_atol": _number(0.0, open_low=True),
        "eval.posthoc_sigma_rels": _sigma_rels(allow_empty=True),
    },
}
# Free-form sampler options (EDM's s_tmax may be inf): not checked for finiteness here, but by the
# sampler's signature where they are used.
_FREE_FORM = ("sample.options", "eval.settings")
# Options a run.json written before they existed lacks (the defaults then apply).
_OPTIONAL = (
    "privacy.",
    "posthoc_ema.",
    "eval.posthoc_sigma_rels",
    "sample.guidance_interval",
    "sample.guide_",
    "loss.uncertainty",
)


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    items = node.items() if isinstance(node, ml_collections.ConfigDict | dict) else None
    if items is None:
        yield prefix, node
        return
    for k, v in items:
        yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))


def _fail(key: str, value: Any, requirement: str, fix: str = "") -> ConfigError:
    fix = fix or f"set it in the config file or with --config.{key}=VALUE"
    return ConfigError(f"config.{key}={value!r} is invalid: it must be {requirement}; {fix}.")


def check_config(config: ml_collections.ConfigDict, *, mode: str = "train") -> None:
    """Checks the options `mode` reads; raises the first problem as one `ConfigError`.

    Args:
      config: an experiment config (see `experiments/`).
      mode: "train", "sample", "stats" or "eval".

    Raises:
      ConfigError: naming the key, its value and the valid range or choices.
    """
    if mode not in MODES:
        raise ConfigError(f"Unknown mode {mode!r}; choose one of {list(MODES)}.")
    for key, value in _leaves(config):
        if key.startswith(_FREE_FORM):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(key, value, "a finite number", "NaN and Inf are never valid settings")
    for key, (ok, requirement) in {**_COMMON, **_BY_MODE[mode]}.items():
        section, _, name = key.rpartition(".")
        if key.startswith(_OPTIONAL) and (section not in config or name not in config[section]):
            continue  # A run.json from before the option.
        value = _get(config, key)
        if not ok(value):
            raise _fail(key, value, requirement)
    if mode == "train":
        t = config.train
        every = {
            f"train.{name}": t[name] for name in ("num_steps", "log_every", "checkpoint_every", "eval_every")
        }
        if "posthoc_ema" in config:
            every["posthoc_ema.every"] = config.posthoc_ema.every
        for name, value in every.items():
            if value % t.steps_per_call:
                raise ConfigError(
                    f"config.{name}={value} is invalid: it must be a multiple of "
                    f"config.train.steps_per_call={t.steps_per_call} (steps run in fused groups of that "
                    "many)."
                )
        if dp_options(config) is not None:
            _check_privacy(config)
        if config.optim.optimizer == "adam" and config.optim.weight_decay:
            raise ConfigError(
                f"config.optim.weight_decay={config.optim.weight_decay!r} needs "
                "config.optim.optimizer='adamw'."
            )


def _check_privacy(config: ml_collections.ConfigDict) -> None:
    """What private training needs beyond each option's range (`gl_jax.train.privacy`)."""
    if config.family not in PRIVATE_FAMILIES:
        raise ConfigError(
            f"config.family={config.family!r} cannot be trained with config.privacy.enabled=True: DP-SGD "
            "clips per-example gradients, and only the families whose loss is a mean over independent "
            f"examples have them ({', '.join(PRIVATE_FAMILIES)}); a GAN's discriminator loss couples the "
            "batch."
        )
    expected, slots = config.privacy.expected_batch_size, config.data.batch_size
    if not 1 <= expected <= slots:
        raise _fail(
            "privacy.expected_batch_size",
            expected,
            f"an integer >= 1 and <= config.data.batch_size={slots} (the batch's slots)",
            "set it with --config.privacy.expected_batch_size=B and config.data.batch_size a few sqrt(B) "
            "above it",
        )
    if config.distributed.enabled:
        raise ConfigError(
            "config.distributed.enabled=True is invalid with config.privacy.enabled=True: Poisson sampling "
            "draws every step's batch from the whole train split in one process; train on one process "
            "(any number of its devices)."
        )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def check_override_types(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict) -> None:
    """Checks that tuples and lists kept the element types the config file gave them.

    `--config.model.features=abc` reaches the config as a tuple with a string in it; this names it.

    Args:
      config: the config after command-line overrides.
      reference: the same config file's config without overrides.

    Raises:
      ConfigError: an overridden sequence holds elements of another type than the file's.
    """
    given = dict(_leaves(reference))
    for key, value in _leaves(config):
        default = given.get(key)
        if not isinstance(default, tuple | list) or not default or key.startswith(_FREE_FORM):
            continue
        kinds = {_kind(v) for v in default}
        if not isinstance(value, tuple | list) or any(_kind(v) not in kinds for v in value):
            example = ",".join(str(v) for v in default)
            raise ConfigError(
                f"config.{key}={value!r} is invalid: it must be a sequence of {'/'.join(sorted(kinds))} "
                f"values like the config file's {tuple(default)!r}; pass e.g. --config.{key}='({example})'."
            )
