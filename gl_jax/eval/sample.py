"""`--mode sample`: samples from the latest checkpoint of a trained run, beside its training if need be."""

from __future__ import annotations

import logging
import os

import jax
import ml_collections
import numpy as np

from gl_jax import files
from gl_jax.interrupts import handle_signals
from gl_jax.train import distributed
from gl_jax.train.experiment import Experiment, reading_workdir
from gl_jax.train.run_record import check_config_matches, read_record
from gl_jax.train.validation import check_config

__all__ = ["sample"]

log = logging.getLogger(__name__)


def sample(config: ml_collections.ConfigDict, workdir: str) -> np.ndarray:
    """Draws `config.sample.num_samples` samples from the latest checkpoint in `workdir`.

    Reads the checkpoints without writing anything among them, so it may run while the same workdir
    trains. Writes `samples/samples.png` and `samples/samples.npz` (each replaced whole).

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
        key = jax.random.fold_in(run.sample_key, int(state.step) + 1)
        path = os.path.join(workdir, "samples", "samples.png")
        samples = run.sample_picture(run.sampling_params(state), key, path)
        if jax.process_index() == 0:
            files.save_npz(
                os.path.join(workdir, "samples", "samples.npz"), samples=samples, step=int(state.step)
            )
            log.info("Sampled from the checkpoint of step %d.", int(state.step))
        return samples
