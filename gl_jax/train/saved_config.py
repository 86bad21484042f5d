"""A config file that reads a trained run's saved config: `--config <this file>:<workdir>`.

`gl-jax` passes it when `--config` is left out and `--workdir` holds a `run.json`
(`gl_jax.train.run_record`), so `gl-jax --workdir runs/x --mode sample` samples with the config the run was
trained with, and `--config.<key>=<value>` overrides still apply (and are checked) as with any config file.
"""

from __future__ import annotations

import ml_collections

from gl_jax.train.run_record import saved_config

__all__ = ["get_config"]


def get_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config of the run in `workdir`, from its `run.json`."""
    return saved_config(workdir)
