"""One process of a job on a given device mesh; results go to --out (see tests/train/test_mesh.py).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.train._mesh_worker \
      --out O [--train W] [--restore W] [--sample W] [--data D --fsdp F] [--num-processes 2 --process-id i]

--train W: trains the digits U-Net score model and the digits GAN (smoke configs, 3 steps, a checkpoint at
  step 3) into W/digits_vp and W/digits_gan; writes `losses_<name>.json` (the per-step losses).
--state-bytes: writes `state_bytes.json`, one device's bytes of the train state of DDPM's CIFAR-10 U-Net
  (35.7M parameters) on this mesh, from XLA's memory analysis of a program that takes the state in its
  layout (nothing of the size is computed).
--restore W: reads W/digits_vp's checkpoint into this mesh; writes `restored.npz` (its parameters).
--sample W: `--mode sample` on W/digits_vp; writes `samples.npz`.
Every config has 2 data shards, so each global batch is the same on 1 or 2 processes.
"""

import argparse
import json
import os

import jax
import numpy as np

from gl_jax.eval.sample import sample
from gl_jax.spec import DataSpec
from gl_jax.train import distributed, loop, parallel
from gl_jax.train.experiment import Experiment
from gl_jax.train.writers import read_metrics
from tests.conftest import load_config

CIFAR10 = DataSpec("cifar10", "image", (32, 32, 3), 256, 10, {"train": 50_000, "test": 10_000})


def _config(name, args):
    config = load_config(name, "smoke")
    config.data.num_shards = 2
    config.mesh.data, config.mesh.fsdp = args.data, args.fsdp
    config.train.num_steps, config.train.log_every, config.train.checkpoint_every = 3, 1, 3
    config.train.steps_per_call = 1
    config.train.eval_every = 0
    config.sample.num_samples = 16
    if args.num_processes > 1:
        config.distributed.enabled = True
        config.distributed.coordinator_address = f"127.0.0.1:{args.port}"
        config.distributed.num_processes = args.num_processes
        config.distributed.process_id = args.process_id
        config.distributed.initialization_timeout = 120
    return config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--train")
    parser.add_argument("--restore")
    parser.add_argument("--sample")
    parser.add_argument("--state-bytes", action="store_true")
    parser.add_argument("--data", type=int, default=-1)
    parser.add_argument("--fsdp", type=int, default=1)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    main_process = args.process_id == 0
    distributed.initialize(_config("digits_vp", args).distributed)  # Before anything touches a device.

    if args.train:
        for name in ("digits_vp", "digits_gan"):
            workdir = os.path.join(args.train, name)
            config = _config(name, args)
            loop.train_and_evaluate(config, workdir)
            if main_process:
                losses = [r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r]
                with open(os.path.join(args.out, f"losses_{name}.json"), "w") as f:
                    json.dump(losses, f)

    if args.state_bytes:
        config = load_config("cifar10_vp_ddpm")
        config.mesh.data, config.mesh.fsdp = args.data, args.fsdp
        run = Experiment(config, load_train=False, spec=CIFAR10)
        state = run.abstract_state()
        compiled = jax.jit(lambda s: s, in_shardings=(run.state_sharding,), out_shardings=run.state_sharding)
        analysis = compiled.lower(state).compile().memory_analysis()
        whole = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
        with open(os.path.join(args.out, "state_bytes.json"), "w") as f:
            json.dump({"per_device": int(analysis.argument_size_in_bytes), "whole": int(whole)}, f)

    if args.restore:
        run = Experiment(_config("digits_vp", args), load_train=False)
        state = run.restore(os.path.join(args.restore, "digits_vp"), purpose="check")
        leaves = jax.tree_util.tree_leaves_with_path(state.params)
        arrays = {jax.tree_util.keystr(path): parallel.host_array(x) for path, x in leaves}
        if main_process:
            np.savez(os.path.join(args.out, "restored.npz"), **arrays)

    if args.sample:
        samples = sample(_config("digits_vp", args), os.path.join(args.sample, "digits_vp"))
        if main_process:
            np.savez(os.path.join(args.out, "samples.npz"), samples=samples)


if __name__ == "__main__":
    main()
