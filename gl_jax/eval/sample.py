"""`--mode sample`: samples from the latest checkpoint of a trained run, beside its training if need be."""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import jax
import ml_collections
import numpy as np

from gl_jax import files
from gl_jax.interrupts import handle_signals
from gl_jax.spec import DataSpec
from gl_jax.train import distributed
from gl_jax.train.experiment import Experiment, reading_workdir
from gl_jax.train.run_record import check_config_matches, config_from_json, read_record
from gl_jax.train.validation import check_config

__all__ = ["sample", "regenerate"]

log = logging.getLogger(__name__)


def sample(config: ml_collections.ConfigDict, workdir: str) -> np.ndarray:
    """Draws `config.sample.num_samples` samples from the latest checkpoint in `workdir`.

    Reads the checkpoints without writing anything among them, so it may run while the same workdir
    trains. Each call writes new files, `samples/sample_<step>_<n>.png` and `.npz` (n = 1, 2, ... for the
    calls on one checkpoint), drawn with a key of the step and n, so earlier samples are kept and every
    file can be drawn again.

    Args:
      config: the run's experiment config.
      workdir: the run's folder.

    Returns:
      The samples, `[N, ...]`.
    """
    with handle_signals() as signals:
        signals.when = "while sampling; rerun the command to sample"
        check_config(config, mode="sample")
        workdir = reading_workdir(workdir, purpose="sample from")
        if (record := read_record(workdir)) is not None:
            check_config_matches(config, record.config, workdir=workdir)
        distributed.initialize(config.distributed)
        run = Experiment(config, load_train=False)
        state = run.restore(workdir, purpose="sample from")
        step = int(state.step)
        folder = os.path.join(workdir, "samples")
        n = _next_index(folder, step)
        key = jax.random.fold_in(jax.random.fold_in(run.sample_key, step + 1), n)
        stem = os.path.join(folder, f"sample_{step:07d}_{n:03d}")
        samples, _ = run.sample_picture(
            run.sampling_params(state), key, stem + ".png", step=step, kind="sample"
        )
        if jax.process_index() == 0:
            record = run.provenance(key, step=step, workdir=workdir, kind="sample")
            files.save_npz(
                stem + ".npz",
                samples=samples,
                step=step,
                index=n,
                provenance=json.dumps(record, sort_keys=True),
            )
            log.info("Sampled from the checkpoint of step %d into %s.png and .npz.", step, stem)
        return samples


def _next_index(folder: str, step: int) -> int:
    """1 + the largest n of the `sample_<step>_<n>.npz` files already in `folder`."""
    pattern = re.compile(rf"^sample_{step:07d}_(\d+)\.npz$")
    taken = [
        int(m.group(1))
        for name in (os.listdir(folder) if os.path.isdir(folder) else [])
        if (m := pattern.match(name))
    ]
    return max(taken, default=0) + 1


def regenerate(rec: dict[str, Any]) -> np.ndarray:
    """Draws the samples of a record again: the same config, checkpoint, parameters and key.

    Returns:
      The samples `[num, ...]`, bitwise equal to the recorded file's on the same platform and versions.
    """
    if rec.get("key") is None:
        raise ValueError(f"A {rec.get('kind')!r} record holds no single key; only sample files regenerate.")
    config = config_from_json(rec["config"])
    spec = rec["spec"]
    spec = DataSpec(**{**spec, "shape": tuple(spec["shape"])})
    run = Experiment(config, load_train=False, spec=spec)
    state = run.restore(rec["workdir"], purpose="regenerate from", step=rec["checkpoint_step"])
    impl = rec["key_impl"]
    key = jax.random.wrap_key_data(np.asarray(rec["key"], np.uint32), impl=impl)
    samples, _ = run.sample_fn(run.sampling_params(state), key, rec["num_samples"])
    return samples
