"""One process of a multi-process training job, or the single-process reference; results go to --out.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m tests.train._multihost \
      --workdir W --out O --num-processes 2 --process-id {0,1} --port PORT

Trains the toy smoke config for 6 steps with 2 data shards, whatever the number of processes, so the
global batches (and the numbers) are those of one process reading both shards. Writes
`shards_<process>.npz` (the train examples this process read, by shard), `params.npz` (process 0: the
final parameters) and `restored_<process>.json` (whether restoring the last checkpoint gave back the final
state).
"""

import argparse
import json
import os

import jax
import numpy as np

from gl_jax.train import experiment, loop
from gl_jax.train.checkpoint import Checkpointer
from tests.conftest import load_config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    config = load_config("toy_vp", "smoke")
    config.data.num_shards = 2
    config.optim.grad_accum_steps = 2
    config.train.num_steps = 6
    config.train.steps_per_call = 1
    config.train.log_every = 3
    config.train.checkpoint_every = 3
    config.sample.num_samples = 16
    if args.num_processes > 1:
        config.distributed.enabled = True
        config.distributed.coordinator_address = f"127.0.0.1:{args.port}"
        config.distributed.num_processes = args.num_processes
        config.distributed.process_id = args.process_id
        config.distributed.initialization_timeout = 120

    # Record the train shards this process reads.
    read = {}
    original = experiment.load_arrays

    def recording_load_arrays(*a, **kw):
        arrays = original(*a, **kw)
        if "shard_count" in kw:
            read[f"shard_{kw['shard_index']}_of_{kw['shard_count']}"] = arrays["x"]
        return arrays

    experiment.load_arrays = recording_load_arrays
    state = loop.train_and_evaluate(config, args.workdir)
    pid = jax.process_index()
    assert jax.device_count() == 4 and jax.process_count() == args.num_processes, jax.devices()
    os.makedirs(args.out, exist_ok=True)
    np.savez(os.path.join(args.out, f"shards_{pid}.npz"), **read)

    local = lambda tree: [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(tree)]
    final = local(state)
    checkpointer = Checkpointer(os.path.join(args.workdir, "checkpoints"))
    restored, _ = checkpointer.restore_latest(state)
    checkpointer.close()
    same = all(np.array_equal(a, b) for a, b in zip(final, local(restored), strict=True))
    with open(os.path.join(args.out, f"restored_{pid}.json"), "w") as f:
        json.dump({"same": same, "step": int(restored.step)}, f)
    if pid == 0:
        np.savez(os.path.join(args.out, "params.npz"), *local(state.params))


if __name__ == "__main__":
    main()
