"""Joining a multi-process (multi-host) job: `jax.distributed.initialize` from `config.distributed`.

Each process runs the same program; after `initialize`, `jax.devices()` lists every process's devices,
the train step's mesh spans them all, and each process feeds only its own shard of the data
(`parallel.shard_batch`). On CPU, cross-process collectives go over gloo (TCP), so several processes on
one machine (or several machines) can train together with `--xla_force_host_platform_device_count` host
devices each::

  for i in 0 1; do
    XLA_FLAGS=--xla_force_host_platform_device_count=2 gl-jax --config experiments/toy_vp.py \\
      --workdir runs/toy2 --config.distributed.enabled=True \\
      --config.distributed.coordinator_address=127.0.0.1:12355 \\
      --config.distributed.num_processes=2 --config.distributed.process_id=$i &
  done
"""

from __future__ import annotations

import logging
import os

import jax
import ml_collections

__all__ = ["initialize", "CPU_COLLECTIVES"]

log = logging.getLogger(__name__)

CPU_COLLECTIVES = ("gloo", "mpi")


def initialize(config: ml_collections.ConfigDict) -> bool:
    """Joins the job described by `config` (the `distributed` section) once per process.

    Must run before anything touches a JAX device; calling it again (a second `train_and_evaluate` in
    the same process) does nothing.

    Args:
      config: `enabled`; `coordinator_address` ("host:port" of process 0; "" lets JAX take
        `$JAX_COORDINATOR_ADDRESS` or detect a SLURM, Open MPI or TPU cluster); `num_processes` (0:
        detected); `process_id` (-1: detected); `cpu_collectives` (how CPU devices talk across
        processes); `initialization_timeout` (seconds to wait for all processes).

    Returns:
      True when this process is part of a multi-process job.

    Raises:
      ValueError: a bad option, or a JAX backend already started (the call came too late).
    """
    if not config.enabled:
        tasks = os.environ.get("SLURM_NTASKS", "1")
        if tasks.isdigit() and int(tasks) > 1 and "SLURM_PROCID" in os.environ:
            # Each task would train alone on the same workdir, and all but one stop on its lock.
            raise ValueError(
                f"This is one of {tasks} SLURM tasks, but config.distributed.enabled is False: pass "
                "--config.distributed.enabled=True so the tasks join one job (docs/scaling.md), or run one "
                "task."
            )
        return False
    if jax.distributed.is_initialized():
        return True
    if config.cpu_collectives not in CPU_COLLECTIVES:
        raise ValueError(
            f"config.distributed.cpu_collectives must be one of {CPU_COLLECTIVES}, got "
            f"{config.cpu_collectives!r}."
        )
    # Only CPU devices use it; it has to be set before the CPU backend starts.
    jax.config.update("jax_cpu_collectives_implementation", config.cpu_collectives)
    try:
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address or None,
            num_processes=config.num_processes or None,
            process_id=None if config.process_id < 0 else config.process_id,
            initialization_timeout=config.initialization_timeout,
        )
    except RuntimeError as e:
        if "must be called before" not in str(e):
            raise
        raise ValueError(
            "jax.distributed.initialize came after JAX had started its devices. Call "
            "train_and_evaluate (or distributed.initialize) before anything touches a device, e.g. "
            "jax.devices()."
        ) from e
    log.info(
        "Process %d of %d joined the job; %d local of %d devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True
