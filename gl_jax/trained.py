"""`load_run(workdir)`: a trained run as an object for your own code, in one line::

    run = gl_jax.load_run("runs/toy_vp")
    x = run.sample(jax.random.key(0), 64)            # [64, *data_shape], the run's sampler
    s = run.score_fn(x, jnp.full((64,), 0.5))        # the score of a diffusion run, at t = 0.5

The run's own record (`run.json`: the resolved config and the data spec, written when it trained) rebuilds
the family without opening the data; the checkpoint is read as `--mode sample` reads it (checksums
verified, nothing written among the checkpoints, safe beside a training process).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import ml_collections

from gl_jax.families import Family, ScoreDiffusion
from gl_jax.sde import GaussianDiffusion
from gl_jax.spec import DataSpec
from gl_jax.train.experiment import Experiment, reading_workdir
from gl_jax.train.run_record import RUN_FILE, read_record

__all__ = ["TrainedRun", "load_run"]


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A trained run's config, family and parameters.

    Attributes:
      workdir: the run's folder.
      config: the resolved config it was trained with.
      spec: its dataset's `DataSpec`.
      family: the family, built from `config` (`gl_jax.families.build`).
      params: the parameters (the EMA ones, unless loaded with `ema=False`), on the default device.
      step: the checkpoint's step.
    """

    workdir: str
    config: ml_collections.ConfigDict
    spec: DataSpec
    family: Family
    params: Any
    step: int

    @property
    def sde(self) -> GaussianDiffusion:
        """The forward process of a diffusion run.

        Raises:
          TypeError: the run is not a score-based diffusion run (a GAN, VAE, autoregressive or latent run).
        """
        return self._diffusion().sde

    def score_fn(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """The model's score `s(x, t)` `[B, ...]` of a diffusion run at `x` `[B, ...]`, `t` `[B]`.

        Args:
          x: points shaped like the data, with a batch axis.
          t: times in [sde.t_min, sde.T], one per point.
          labels: `[B]` class labels for a class-conditional model.

        Raises:
          TypeError: the run is not a score-based diffusion run.
        """
        return self._diffusion().score_fn(self.params, labels)(x, t)

    def _diffusion(self) -> ScoreDiffusion:
        if not isinstance(self.family, ScoreDiffusion):
            raise TypeError(f"A {type(self.family).__name__} run has no score of the data and no process.")
        return self.family

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """`num` samples `[num, *data_shape]` in the data's range, with the run's configured sampler."""
        return _sample(self.family, self.params, key, num)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _sample(family: Family, params: Any, key: jax.Array, num: int) -> jax.Array:
    return family.sample(params, key, num)


def load_run(workdir: str, *, step: int | None = None, ema: bool = True) -> TrainedRun:
    """Loads a trained run for use in your own code.

    Args:
      workdir: the run's folder (`--workdir` of its training).
      step: the checkpoint step to load; None: the latest sound one.
      ema: the EMA parameters (what sampling uses by default), else the raw ones.

    Returns:
      A `TrainedRun` with `config`, `family`, `params`, `score_fn`, `sde` and `sample(key, num)`.

    Raises:
      FileNotFoundError: the folder has no `run.json` (not a run, or one trained before runs recorded
        their config), naming the fix.
      gl_jax.train.save_errors.CheckpointError: no sound checkpoint (of that step).
    """
    workdir = reading_workdir(workdir, purpose="load")
    record = read_record(workdir)
    if record is None:
        raise FileNotFoundError(
            f"{os.path.join(workdir, RUN_FILE)} is missing: load_run needs the config a run records when it "
            "trains (runs of older gl_jax do not); build the family from its config and restore it with "
            "gl_jax.train.experiment.Experiment(config, load_train=False).restore(workdir, purpose='load')."
        )
    run = Experiment(record.config, load_train=False, spec=record.spec)
    state = run.restore(workdir, purpose="load", step=step)
    params = state.ema_params if ema else state.params
    return TrainedRun(workdir, record.config, record.spec, run.family, params, int(state.step))
