"""Provenance: where every generated file came from, written into the file itself.

A provenance record is a JSON object: the full config that drew the samples and its SHA-256, the data's
spec, the run's folder and checkpoint step, whether EMA or raw parameters were used, the PRNG key (its raw
bits, so no derivation has to be repeated), the number of samples, the sampler and its settings, the
gl_jax version and git commit, the versions of the packages the numbers depend on, the device platform
and count, the command line and the time. It goes into

  * PNG pictures: a text chunk `gl_jax_provenance` (read by any PNG tool: `identify -verbose`, Pillow's
    `Image.text`), and a sidecar `<picture>.provenance.json` for tools that drop chunks;
  * `.npz` sample files: a string field `provenance`;
  * JSON reports (`eval/report.json`): a `provenance` entry.

`read(path)` gets the record back from any of them; `gl-jax --mode info --file F` prints it; and
`gl_jax.eval.sample.regenerate(record)` draws the samples of a `--mode sample` file again from its record,
bitwise equal on the same platform (the samples are drawn per example from the recorded key, so the device
count does not matter; `parallel.compile_sampler`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from gl_jax import files
from gl_jax.spec import DataSpec
from gl_jax.train.run_record import git_commit, package_version

__all__ = ["PNG_KEY", "record", "sidecar_path", "png_metadata", "read"]

PNG_KEY = "gl_jax_provenance"
# Distributions whose versions can change the numbers drawn (the ones absent are left out).
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections", "diffrax")


def _versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def record(
    config: ml_collections.ConfigDict,
    *,
    spec: DataSpec,
    workdir: str,
    step: int,
    key: jax.Array | None,
    num: int | None,
    sampler: dict[str, Any] | None = None,
    kind: str,
) -> dict[str, Any]:
    """The provenance record of a file of samples (or of a report about them).

    Args:
      config: the config the samples were drawn with (after every override).
      spec: the data's spec (what the model was trained on).
      workdir: the run's folder.
      step: the checkpoint step of the parameters.
      key: the PRNG key the samples were drawn from (None for a report over many keys).
      num: how many samples the key drew.
      sampler: the sampler and its settings (default: the config's `sample` section).
      kind: what the file is: "sample" (`--mode sample`), "step picture" (training), "eval report", ...
    """
    config_json = files.canonical(config)
    return {
        "kind": kind,
        "gl_jax_version": package_version(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": list(sys.argv),
        "workdir": os.path.abspath(workdir),
        "checkpoint_step": int(step),
        "use_ema": bool(config.sample.use_ema),
        "key": None if key is None else [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()],
        "key_impl": None if key is None else str(jax.random.key_impl(key)),
        "num_samples": num,
        "sampler": files.canonical(sampler if sampler is not None else config.sample),
        "config_sha256": hashlib.sha256(json.dumps(config_json, sort_keys=True).encode()).hexdigest(),
        "config": config_json,
        "spec": files.canonical(dataclasses.asdict(spec)),
        "packages": _versions(),
        "devices": {"platform": jax.devices()[0].platform, "count": jax.device_count()},
    }


def sidecar_path(path: str | os.PathLike) -> str:
    """The JSON sidecar of a picture: `samples/x.png` -> `samples/x.png.provenance.json`."""
    return os.fspath(path) + ".provenance.json"


def png_metadata(rec: dict[str, Any]) -> dict[str, str]:
    """The PNG text chunks of a record (`plots.save_samples(..., metadata=)`)."""
    return {PNG_KEY: json.dumps(rec, sort_keys=True)}


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record of a PNG picture, an `.npz` sample file, a JSON report or a sidecar.

    Raises:
      ValueError: the file carries no record (one line naming the file).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; pass a picture, .npz or report that gl-jax wrote.")
    ext = os.path.splitext(path)[1].lower()
    text = None
    if ext == ".png":
        from PIL import Image

        with Image.open(path) as image:
            text = image.text.get(PNG_KEY)
        if text is None and os.path.isfile(sidecar_path(path)):
            return read(sidecar_path(path))
    elif ext == ".npz":
        with np.load(path, allow_pickle=False) as f:
            if "provenance" in f.files:
                text = str(f["provenance"])
    elif ext == ".json":
        with open(path) as f:
            value = json.load(f)
        if isinstance(value, dict) and "config_sha256" in value:
            return value  # A sidecar is the record itself.
        if isinstance(value, dict) and isinstance(value.get("provenance"), dict):
            return value["provenance"]
    if text is None:
        raise ValueError(
            f"{path} carries no gl_jax provenance record (files written by gl-jax's sample, train and eval "
            "modes carry one)."
        )
    return json.loads(text)
