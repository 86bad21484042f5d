"""Compiling the train step over devices: `jax.jit` on a 1-D `Mesh(("data",))`, or `jax.pmap`.

Data parallel: the batch is sharded on its leading axis, the state is replicated. Parameters are created
already replicated (`jax.jit(init, out_shardings=...)`), the state is donated to the step, and k steps can
be fused into one call with `lax.scan`. The same code runs multi-host after `jax.distributed.initialize()`:
each process passes its local part of the batch to `shard_batch`, which assembles the global array with
`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gl_jax.train.state import TrainState

__all__ = [
    "DATA_AXIS",
    "make_mesh",
    "replicated",
    "batch_sharding",
    "init_replicated",
    "abstract_replicated",
    "init_compiler_options",
    "shard_batch",
    "compile_train_step",
    "pmap_train_step",
    "replicate_for_pmap",
]

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: all devices of all processes) with axis name "data"."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, *, steps_per_call: int = 1) -> NamedSharding:
    """Sharding of a batch `[B, ...]`, or of fused batches `[k, B, ...]` when `steps_per_call > 1`."""
    return NamedSharding(mesh, P(None, DATA_AXIS) if steps_per_call > 1 else P(DATA_AXIS))


def init_replicated(init_fn: Callable[[jax.Array], Any], key: jax.Array, mesh: Mesh) -> Any:
    """Runs `init_fn(key)` under `jax.jit` with replicated outputs: the state is born on every device.

    The program runs once, so on CPU it is compiled without XLA's backend (LLVM) optimisations, which
    cost more compile time than they could save in one run. Values may differ from an optimised build in
    the last bit (a different rounding order), never between processes or runs of this code.
    """
    lowered = jax.jit(init_fn, out_shardings=replicated(mesh)).lower(key)
    return lowered.compile(compiler_options=init_compiler_options(mesh))(key)


def init_compiler_options(mesh: Mesh) -> dict[str, int] | None:
    """XLA options `init_replicated` compiles with: no backend optimisation on CPU, the defaults elsewhere."""
    return {"xla_backend_optimization_level": 0} if mesh.devices.flat[0].platform == "cpu" else None


def abstract_replicated(init_fn: Callable[[jax.Array], Any], key: jax.Array, mesh: Mesh) -> Any:
    """The shapes, dtypes and (replicated) shardings `init_replicated` would give, without computing it.

    A restore target: a checkpoint is read straight into this layout, and nothing is compiled.
    """
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), jax.eval_shape(init_fn, key)
    )


def shard_batch(batch: dict, mesh: Mesh, *, steps_per_call: int = 1) -> dict:
    """Assembles global, sharded arrays from this process's part of a batch.

    Args:
      batch: NumPy arrays `[B_local, ...]` (or `[k, B_local, ...]` for fused steps).
      mesh: the data mesh.
      steps_per_call: k when batches of k fused steps are stacked on a leading axis.

    Returns:
      Global `jax.Array` objects sharded over the mesh's data axis.
    """
    sharding = batch_sharding(mesh, steps_per_call=steps_per_call)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def compile_train_step(
    train_step: Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]],
    mesh: Mesh,
    *,
    steps_per_call: int = 1,
    unroll: bool | None = None,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """`jax.jit` of the step over `mesh`, with the state donated; optionally k steps per call.

    Args:
      train_step: from `make_train_step` (built with `axis_name=None`).
      mesh: the data mesh.
      steps_per_call: fuse this many steps into one call with `lax.scan`; the batch then carries a leading
        `[k]` axis and each returned metric is `[k]`.
      unroll: unroll the scan over the k steps. Default: on CPU only, where XLA runs convolution
        gradients inside a while loop far slower than unrolled; elsewhere the rolled loop compiles faster
        at no cost.

    Returns:
      The compiled `step(state, batch, key) -> (state, metrics)`.
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}.")

    if unroll is None:
        unroll = mesh.devices.flat[0].platform == "cpu"

    def fused(state, batches, key):
        return jax.lax.scan(lambda s, b: train_step(s, b, key), state, batches, unroll=bool(unroll))

    fn = train_step if steps_per_call == 1 else fused
    rep = replicated(mesh)
    return jax.jit(
        fn,
        in_shardings=(rep, batch_sharding(mesh, steps_per_call=steps_per_call), rep),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    )


def pmap_train_step(
    train_step: Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]],
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """`jax.pmap` of a step built with `make_train_step(..., axis_name="data")`.

    The state must be replicated over local devices (`replicate_for_pmap`) and the batch reshaped to
    `[num_devices, B / num_devices, ...]`; the key is shared (broadcast).
    """
    return jax.pmap(train_step, axis_name=DATA_AXIS, in_axes=(0, 0, None), donate_argnums=(0,))


def replicate_for_pmap(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
    """Stacks one copy of each leaf per local device, `[num_devices, ...]`, placed one per device."""
    devices = jax.local_devices() if devices is None else list(devices)
    sharding = NamedSharding(Mesh(np.asarray(devices), (DATA_AXIS,)), P(DATA_AXIS))
    return jax.tree.map(lambda x: jax.device_put(np.stack([np.asarray(x)] * len(devices)), sharding), tree)
