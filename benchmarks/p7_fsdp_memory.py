"""P7: per-device memory of the train step with the state sharded over "fsdp" (config.mesh.fsdp).

For DDPM's CIFAR-10 U-Net (`experiments/cifar10_vp_ddpm.py`, 35.7M parameters; Ho et al. 2020) the real
train step (Adam, EMA, clipping; `make_train_step` + `parallel.compile_train_step`) is compiled for a mesh of
8 devices with fsdp = 1 (data parallel, every device holds the whole state), 2, 4 and 8, and XLA's memory
analysis of each compiled program is read: the bytes of one device's arguments (its part of the state, and
of the batch), outputs, temporaries (activations, gathered parameters, gradients) and the plan's total.
The state's own bytes per device are also counted from the shardings (`parallel.fsdp_spec`: every array of
4,096 or more elements split on its largest axis the fsdp size divides). Nothing of the state's size is
computed: the step is compiled from abstract shapes (`Experiment.abstract_state`).

The 8 devices are CPU host devices (`--xla_force_host_platform_device_count=8`, set by this script before
JAX starts), so the numbers are XLA's plan for 8 devices, not measured on an accelerator; the CPU plan's
temporaries differ from a GPU's, the state's shares do not.

Goal (the scaling issue): one device's state at fsdp=8 at most 1/6 of the replicated state's.

Run:  .venv/bin/python -m benchmarks.p7_fsdp_memory [--batch 64]   (about 4 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import os
import time

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402 - after the device count is set.
import numpy as np  # noqa: E402

from gl_jax.experiments import get_config  # noqa: E402
from gl_jax.spec import DataSpec  # noqa: E402
from gl_jax.train import parallel  # noqa: E402
from gl_jax.train.experiment import Experiment  # noqa: E402
from gl_jax.train.step import make_train_step  # noqa: E402

CIFAR10 = DataSpec("cifar10", "image", (32, 32, 3), 256, 10, {"train": 50_000, "test": 10_000})
MIB = 2**20


def measure(fsdp: int, batch: int) -> dict:
    """Compiles the CIFAR-10 DDPM train step for an 8-device mesh with this fsdp size; its memory plan."""
    config = get_config("cifar10_vp_ddpm")
    config.mesh.fsdp = fsdp
    config.data.batch_size = batch
    run = Experiment(config, load_train=False, spec=CIFAR10)
    state = run.abstract_state()
    step = parallel.compile_train_step(
        make_train_step(run.family.loss, ema_decay=config.train.ema_decay),
        run.mesh,
        state_sharding=run.state_sharding,
    )
    x = jax.ShapeDtypeStruct((batch, *CIFAR10.shape), np.float32, sharding=parallel.batch_sharding(run.mesh))
    start = time.perf_counter()
    compiled = step.lower(state, {"x": x}, jax.random.key(0)).compile()
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    leaves = jax.tree.leaves(state)
    batch_device = batch // run.mesh.size * int(np.prod(CIFAR10.shape)) * 4  # float32 examples per device.
    return {
        "fsdp": fsdp,
        "params": sum(x.size for x in jax.tree.leaves(state.params)),
        "state_whole": sum(x.size * x.dtype.itemsize for x in leaves),
        "state_device": sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize for x in leaves),
        "arguments": mem.argument_size_in_bytes,
        # The compiled step's arguments less one device's batch: its state (and the 8-byte key).
        "state_analysis": mem.argument_size_in_bytes - batch_device,
        "outputs": mem.output_size_in_bytes,
        "temporaries": mem.temp_size_in_bytes,
        "plan": mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
        + mem.temp_size_in_bytes,
        "compile_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="global batch (8 examples per device)")
    parser.add_argument("--fsdp", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    assert jax.device_count() == 8, jax.devices()
    rows = [measure(f, args.batch) for f in args.fsdp]
    base = next((r for r in rows if r["fsdp"] == 1), rows[0])
    print(
        f"DDPM CIFAR-10 U-Net ({base['params'] / 1e6:.1f}M parameters), train step on 8 devices, global "
        f"batch {args.batch}; XLA's memory plan per device (MiB)"
    )
    header = [
        "fsdp",
        "state / device",
        "vs replicated",
        "arguments",
        "temporaries",
        "plan",
        "compile s",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        cells = [
            str(r["fsdp"]),
            f"{r['state_analysis'] / MIB:.1f}",
            f"1/{base['state_analysis'] / r['state_analysis']:.2f}",
            f"{r['arguments'] / MIB:.1f}",
            f"{r['temporaries'] / MIB:.1f}",
            f"{r['plan'] / MIB:.1f}",
            f"{r['compile_s']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    goal = next((r for r in rows if r["fsdp"] == 8), None)
    if goal is not None:
        ok = goal["state_analysis"] <= base["state_analysis"] / 6
        print(
            f"Goal (state per device at fsdp=8 <= 1/6 of replicated): {'met' if ok else 'NOT met'}. Counted "
            f"from the shardings: {goal['state_device'] / MIB:.1f} of {base['state_device'] / MIB:.1f} MiB."
        )


if __name__ == "__main__":
    main()
