"""What a run records about itself, so that it can be used again: the resolved config, the data it was
trained on, and how it was started.

Training writes `<workdir>/run.json` when it starts: the resolved config (overrides applied), the
dataset's `DataSpec` (so a trained model can be rebuilt without opening the data), the command line, the
gl_jax version and the git commit of the code when it is a checkout. A reader (`--mode sample`,
`--mode eval`, `gl_jax.load_run`) checks the config it is given against it: a change to what the
checkpoint means (the family, network, process, parametrisation, data) is refused with one line, any
other change (sampler, steps, evaluation settings) is applied and noted in the log.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import ml_collections

from gl_jax import files
from gl_jax.registry import plain
from gl_jax.spec import DataSpec
from gl_jax.train.posthoc_ema import posthoc_sigma_rels

__all__ = [
    "RUN_FILE",
    "MEANING_KEYS",
    "RunRecord",
    "write_record",
    "read_record",
    "saved_config",
    "config_from_json",
    "check_config_matches",
    "git_commit",
    "package_version",
]

log = logging.getLogger(__name__)

RUN_FILE = "run.json"

# Config entries that define what a checkpoint's numbers mean: with another value, the same parameters
# would be read as another model. A family's own options section counts when the config has it.
_FAMILY_SECTIONS = ("gan", "vae", "ar", "latent")
MEANING_KEYS = (
    "family",
    "model",
    "sde",
    "loss.prediction",
    "loss.noise_cond",
    "data.name",
    "data.dequantize",
    *_FAMILY_SECTIONS,
)
# An entry one config has and the other lacks.
_MISSING = "<missing>"


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A run's `run.json`.

    Attributes:
      config: the resolved config the run was trained with.
      spec: the dataset's `DataSpec`.
      command: the command line that started the run (the latest start, for a resumed run).
      version: the gl_jax version.
      commit: the git commit of the code, or None outside a checkout.
      started: when the run (last) started, as a UTC ISO time.
    """

    config: ml_collections.ConfigDict
    spec: DataSpec
    command: list[str]
    version: str
    commit: str | None
    started: str


def _entry(config: Any, key: str) -> Any:
    """`config.<key>` for a dotted key, or a marker when it is missing."""
    for part in key.split("."):
        if part not in config:
            return _MISSING
        config = config[part]
    return config


def git_commit() -> str | None:
    """The commit of the checkout gl_jax is imported from, or None (an installed wheel, no git)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(
            ["git", "-C", os.path.dirname(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def package_version() -> str:
    """The installed gl_jax's version (package metadata: this layer does not import the package root)."""
    try:
        return importlib.metadata.version("gl_jax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_record(config: ml_collections.ConfigDict, spec: DataSpec, workdir: str) -> None:
    """Writes `<workdir>/run.json` (atomically) for a training run that starts or resumes."""
    record = {
        "config": files.canonical(config),
        "spec": files.canonical(dataclasses.asdict(spec)),
        "command": list(sys.argv),
        "version": package_version(),
        "commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    files.write_json(os.path.join(workdir, RUN_FILE), record)


def read_record(workdir: str, *, set_aside: bool = False) -> RunRecord | None:
    """The run's record, or None for a run trained before runs recorded themselves or a record whose bytes
    are damaged (with a warning; the checkpoints' shapes still guard a resumed run).

    Args:
      workdir: the run's folder.
      set_aside: move a damaged record to `run.json.corrupt` (only the training process, which holds the
        workdir's lock and writes the record again).
    """
    path = os.path.join(workdir, RUN_FILE)
    try:
        with open(path) as f:
            raw = json.load(f)
        spec = raw["spec"]
        spec = DataSpec(**{**spec, "shape": tuple(spec["shape"])})
        config = config_from_json(raw["config"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning(
            "The run record %s is unreadable (%s: %s); not checking the config against it.",
            path,
            type(e).__name__,
            e,
        )
        if set_aside:
            os.replace(path, f"{path}.corrupt")
        return None
    return RunRecord(
        config,
        spec,
        raw.get("command", []),
        raw.get("version", ""),
        raw.get("commit"),
        raw.get("started", ""),
    )


def config_from_json(raw: dict[str, Any]) -> ml_collections.ConfigDict:
    """A config as read back from JSON (`run.json`, a provenance record), with its sequences as the tuples
    the config file had: JSON has only lists, and `--config.<key>=...` overrides only a tuple."""
    return ml_collections.ConfigDict(plain(raw))


def saved_config(workdir: str) -> ml_collections.ConfigDict:
    """The config the run in `workdir` was trained with (its `run.json`).

    Raises:
      FileNotFoundError: the workdir has no readable `run.json` (one line naming it and the fix).
    """
    record = read_record(workdir)
    if record is None:
        raise FileNotFoundError(
            f"{os.path.join(workdir, RUN_FILE)} is missing or unreadable, so the run's config is unknown: "
            "pass the config it was trained with, --config FILE[:variant] or --config NAME[:variant]."
        )
    return record.config


def check_config_matches(
    config: ml_collections.ConfigDict, saved: ml_collections.ConfigDict, *, workdir: str
) -> None:
    """Refuses a config that gives the run's checkpoint another meaning; notes the other differences.

    Args:
      config: the config a reader (or a resumed training run) was given.
      saved: the config the run was trained with.
      workdir: the run's folder, for messages.

    Raises:
      ValueError: an entry of `MEANING_KEYS` differs (one line naming it, both values and the fix).
    """
    for key in MEANING_KEYS:
        mine, theirs = files.canonical(_entry(config, key)), files.canonical(_entry(saved, key))
        if mine != theirs and not (key in _FAMILY_SECTIONS and _MISSING in (mine, theirs)):
            raise ValueError(
                f"config.{key}={json.dumps(mine)} differs from the run in {workdir}, trained with "
                f"config.{key}={json.dumps(theirs)}: its checkpoint would be read as another model. Use the "
                f"run's own config (leave out --config and any override of config.{key}; it is saved in "
                f"{os.path.join(workdir, RUN_FILE)}), or a new --workdir."
            )
    mine, theirs = posthoc_sigma_rels(config), posthoc_sigma_rels(saved)
    if mine != theirs:  # The averages live in the optimizer state: another set is another checkpoint layout.
        described = lambda w: "no post-hoc EMA" if w is None else f"post-hoc EMAs of sigma_rel {list(w)}"
        raise ValueError(
            f"This config tracks {described(mine)}, the run in {workdir} was trained with "
            f"{described(theirs)} "
            "(config.posthoc_ema.every and .sigma_rels): its checkpoint holds other averages. Use the run's "
            f"own config (saved in {os.path.join(workdir, RUN_FILE)}), or a new --workdir."
        )
    changed = sorted(_differences(files.canonical(config), files.canonical(saved)))
    if changed:
        log.info("Options that differ from the run's training config (applied): %s.", ", ".join(changed))


def _differences(a: Any, b: Any, prefix: str = "config") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key, _MISSING), b.get(key, _MISSING), f"{prefix}.{key}")
        return out
    return [] if a == b else [prefix]
