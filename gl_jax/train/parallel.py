"""Compiling the train step over devices: `jax.jit` on a 2-D `Mesh(("data", "fsdp"))`, or `jax.pmap`.

The batch is sharded on its leading axis over both mesh axes (every device holds `B / num_devices`
examples). The state (parameters, EMA parameters, optimizer moments) is sharded over the "fsdp" axis by
one rule, `fsdp_spec`: an array of at least `min_size` elements is split along its largest axis that the
fsdp size divides, as big_vision's fsdp strategy does; smaller arrays, and all arrays when fsdp is 1, are
replicated. With fsdp = 1 this is data parallelism; with fsdp = n each device holds about 1/n of the
state and XLA inserts the all-gathers of the parameters and the reduce-scatters of the gradients (ZeRO-3,
Rajbhandari et al. 2020). The state is created already sharded (`jax.jit(init, out_shardings=...)`), is
donated to the step, and k steps can be fused into one call with `lax.scan`. The same code runs multi-host
after `jax.distributed.initialize()`: each process passes its local part of the batch to `shard_batch`,
which assembles the global array with `jax.make_array_from_process_local_data`; the mesh keeps each
process's devices together along "fsdp" (the faster links within a host carry the gathers).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gl_jax.train.state import TrainState

__all__ = [
    "DATA_AXIS",
    "FSDP_AXIS",
    "BATCH_AXES",
    "MIN_SHARD_SIZE",
    "make_mesh",
    "replicated",
    "batch_sharding",
    "fsdp_spec",
    "state_shardings",
    "init_sharded",
    "abstract_sharded",
    "init_replicated",
    "abstract_replicated",
    "init_compiler_options",
    "shard_batch",
    "compile_train_step",
    "BackgroundCompile",
    "compile_sampler",
    "host_array",
    "pmap_train_step",
    "replicate_for_pmap",
]

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # The batch is split over every device.
# Arrays with fewer elements stay replicated under fsdp: biases, norms' scales, small kernels, where a
# gather would cost more in latency than the memory it saves (big_vision shards only arrays above a size).
MIN_SHARD_SIZE = 2**12


def make_mesh(devices: Sequence[jax.Device] | None = None, *, data: int = -1, fsdp: int = 1) -> Mesh:
    """A 2-D mesh `("data", "fsdp")` over `devices` (default: all devices of all processes).

    Args:
      devices: the devices, in process order (`jax.devices()`'s), so consecutive devices along "fsdp"
        belong to one process where the fsdp size allows.
      data: the data-parallel size; -1: the devices left after fsdp.
      fsdp: how many devices share (shard) one copy of the state; 1: every device holds all of it.

    Raises:
      ValueError: the sizes do not multiply to the number of devices.
    """
    devices = jax.devices() if devices is None else list(devices)
    n = len(devices)
    if fsdp < 1 or n % fsdp:
        raise ValueError(f"config.mesh.fsdp={fsdp} must be >= 1 and divide the {n} devices.")
    if data == -1:
        data = n // fsdp
    if data * fsdp != n:
        raise ValueError(
            f"config.mesh.data={data} times config.mesh.fsdp={fsdp} must be the {n} devices; set "
            "config.mesh.data=-1 to use the devices fsdp leaves."
        )
    return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, *, steps_per_call: int = 1) -> NamedSharding:
    """Sharding of a batch `[B, ...]` over every device, or of fused batches `[k, B, ...]` when
    `steps_per_call > 1`."""
    return NamedSharding(mesh, P(None, BATCH_AXES) if steps_per_call > 1 else P(BATCH_AXES))


def fsdp_spec(shape: Sequence[int], fsdp: int, *, min_size: int = MIN_SHARD_SIZE) -> P:
    """The partition of one state array: its largest axis that `fsdp` divides is split over "fsdp" when the
    array has at least `min_size` elements; otherwise (or when fsdp is 1) it is replicated.

    e.g. a conv kernel `[3, 3, 128, 256]` with fsdp 8 -> `P(None, None, None, "fsdp")`.
    """
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    axes = sorted((i for i, n in enumerate(shape) if n % fsdp == 0), key=lambda i: (-shape[i], i))
    if not axes:
        return P()
    spec = [None] * len(shape)
    spec[axes[0]] = FSDP_AXIS
    return P(*spec)


def state_shardings(tree: Any, mesh: Mesh, *, min_size: int = MIN_SHARD_SIZE) -> Any:
    """`NamedSharding`s for a tree of arrays or shapes (e.g. `jax.eval_shape` of the state): `fsdp_spec`
    per leaf, so parameters, EMA parameters and Adam's moments of one shape share one layout."""
    fsdp = mesh.shape[FSDP_AXIS]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, fsdp, min_size=min_size)), tree)


def init_sharded(init_fn: Callable[[jax.Array], Any], key: jax.Array, mesh: Mesh, shardings: Any) -> Any:
    """Runs `init_fn(key)` under `jax.jit` with outputs laid out as `shardings`: the state is born in place
    (sharded or replicated), never whole on one device.

    The program runs once, so on CPU it is compiled without XLA's backend (LLVM) optimisations, which
    cost more compile time than they could save in one run. Values may differ from an optimised build in
    the last bit (a different rounding order), never between processes, meshes or runs of this code.
    """
    lowered = jax.jit(init_fn, out_shardings=shardings).lower(key)
    return lowered.compile(compiler_options=init_compiler_options(mesh))(key)


def abstract_sharded(init_fn: Callable[[jax.Array], Any], key: jax.Array, shardings: Any) -> Any:
    """The shapes, dtypes and shardings `init_sharded` would give, without computing anything: the target a
    checkpoint is read into (in this mesh's layout, whatever layout it was saved from)."""
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        jax.eval_shape(init_fn, key),
        shardings,
    )


def init_replicated(init_fn: Callable[[jax.Array], Any], key: jax.Array, mesh: Mesh) -> Any:
    """`init_sharded` with every output replicated (the state of data parallelism)."""
    return init_sharded(init_fn, key, mesh, replicated(mesh))


def init_compiler_options(mesh: Mesh) -> dict[str, int] | None:
    """XLA options `init_replicated` compiles with: no backend optimisation on CPU, the defaults elsewhere."""
    return {"xla_backend_optimization_level": 0} if mesh.devices.flat[0].platform == "cpu" else None


def abstract_replicated(init_fn: Callable[[jax.Array], Any], key: jax.Array, mesh: Mesh) -> Any:
    """`abstract_sharded` with every leaf replicated."""
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), jax.eval_shape(init_fn, key)
    )


def shard_batch(batch: dict, mesh: Mesh, *, steps_per_call: int = 1) -> dict:
    """Assembles global, sharded arrays from this process's part of a batch.

    Args:
      batch: NumPy arrays `[B_local, ...]` (or `[k, B_local, ...]` for fused steps).
      mesh: the device mesh.
      steps_per_call: k when batches of k fused steps are stacked on a leading axis.

    Returns:
      Global `jax.Array` objects sharded over all the mesh's devices.
    """
    sharding = batch_sharding(mesh, steps_per_call=steps_per_call)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def compile_train_step(
    train_step: Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]],
    mesh: Mesh,
    *,
    state_sharding: Any = None,
    steps_per_call: int = 1,
    unroll: bool | None = None,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """`jax.jit` of the step over `mesh`, with the state donated; optionally k steps per call.

    Args:
      train_step: from `make_train_step` (built with `axis_name=None`).
      mesh: the device mesh.
      state_sharding: the state's layout (`state_shardings` of it); default: replicated.
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
    state_sharding = rep if state_sharding is None else state_sharding
    return jax.jit(
        fn,
        in_shardings=(state_sharding, batch_sharding(mesh, steps_per_call=steps_per_call), rep),
        out_shardings=(state_sharding, rep),
        donate_argnums=(0,),
    )


class BackgroundCompile:
    """Lowers and compiles a jitted function for given arguments in a thread, while the caller goes on.

    A fresh run compiles its initialisation and its train step; the second needs only the state's shapes
    and layout (`abstract_sharded`), not its values. XLA releases the interpreter lock while it compiles,
    and on a 2-core CPU one compilation keeps about 1.4 cores busy, so the step's compilation started
    from the abstract state overlaps the initialisation's tracing, compilation and run
    (`benchmarks/p5_time_to_first_step.py` measures the time to the first step).

    Attributes:
      seconds: wall time of the lowering and compilation, once `result` has returned.
    """

    def __init__(self, fn: Any, *args: Any):
        """Starts compiling `fn.lower(*args)` (a `jax.jit` function; `args` may be `ShapeDtypeStruct`s
        with shardings)."""
        self.seconds: float | None = None
        self._compiled = None
        self._error: BaseException | None = None
        # A daemon thread: a run stopped during its initialisation does not wait for the compiler.
        self._thread = threading.Thread(target=self._run, args=(fn, args), name="compile", daemon=True)
        self._thread.start()

    def _run(self, fn: Any, args: tuple) -> None:
        start = time.perf_counter()
        try:
            self._compiled = fn.lower(*args).compile()
        except BaseException as error:  # Raised in the caller's thread by `result`.
            self._error = error
        self.seconds = time.perf_counter() - start

    def result(self) -> Any:
        """Waits for the compilation; returns the compiled function or raises its error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._compiled


def compile_sampler(
    sample_one: Callable[[Any, jax.Array, jax.Array], Any], mesh: Mesh
) -> Callable[[Any, jax.Array, int], tuple[np.ndarray, int | None]]:
    """A family's `sample_one(params, key, index)` (`Family.sample_one`) spread over every device of `mesh`
    (and every process), as a sampler of `num` samples.

    Sample i is drawn alone from its own key, `fold_in(key, i)`, by `jax.vmap` over the samples; the batch
    of samples is split over all devices. So the samples depend only on `key` and i, not on the number of
    devices or processes, and no device holds more than `ceil(num / devices)` of them. `num` is padded up
    to a multiple of the device count (the extra samples are drawn and dropped).

    All processes must call the returned function together (it is one program over the mesh); each gets
    every sample.

    Args:
      sample_one: `(params, key, index) -> SampleResult(x [1, ...], nfe or None)`: sample number `index`
        (a class-conditional family draws class `index % num_classes`).
      mesh: the device mesh; the parameters may be laid out on it in any way (replicated, fsdp).

    Returns:
      `fn(params, key, num) -> (x [num, ...] as NumPy, nfe)`: nfe the most network evaluations any sample
      took (adaptive samplers differ per sample), or None where the family does not count them.
    """
    batch = batch_sharding(mesh)

    @functools.partial(jax.jit, static_argnums=(2,))
    def draw(params, key, padded):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(padded))
        keys = jax.lax.with_sharding_constraint(keys, batch)  # [padded], split over the devices.

        def one(k, i):
            x, nfe = sample_one(params, k, i)
            return x[0], nfe

        x, nfe = jax.vmap(one)(keys, jnp.arange(padded))
        x = jax.lax.with_sharding_constraint(x, batch)
        return x, None if nfe is None else jnp.max(nfe)

    def fn(params, key, num: int) -> tuple[np.ndarray, int | None]:
        padded = -(-num // mesh.size) * mesh.size
        x, nfe = draw(params, key, padded)
        return host_array(x)[:num], None if nfe is None else int(host_array(nfe))

    return fn


def host_array(x: jax.Array) -> np.ndarray:
    """The whole value of a global array on this process, as NumPy: gathered from the other processes
    when some of it lives there (a collective: every process must call it), else read locally."""
    if x.is_fully_addressable:
        return np.asarray(x)
    if x.sharding.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


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
