"""Runs 3 train steps five ways (1 device; 4 devices data parallel, fsdp=4 and data=2 x fsdp=2; pmap) and
prints the losses as JSON. The fsdp layouts shard every state array of 16 or more elements (the network is
small), so the gathers and reduce-scatters XLA inserts are exercised.

Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.models import SmallUNet
from gl_jax.sde import VPSDE
from gl_jax.train import TrainState, make_optimizer, make_train_step, parallel


def main():
    assert jax.device_count() == 4, jax.devices()
    family = ScoreDiffusion(
        model=SmallUNet(channels=8, channel_mults=(1,), num_res_blocks=1), sde=VPSDE(), data_shape=(8, 8, 1)
    )
    tx = make_optimizer(lr=1e-3, warmup_steps=2, grad_clip=1.0)
    rng = np.random.default_rng(0)
    batches = [{"x": rng.uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32)} for _ in range(3)]
    init_key, step_key = jax.random.key(0), jax.random.key(1)
    out = {}

    def create(key):
        return TrainState.create(params=family.init(key), tx=tx)

    layouts = {
        "jit_1": (jax.devices()[:1], -1, 1),
        "jit_4": (jax.devices(), -1, 1),
        "fsdp_4": (jax.devices(), 1, 4),
        "data2_fsdp2": (jax.devices(), 2, 2),
    }
    for name, (devices, data, fsdp) in layouts.items():
        mesh = parallel.make_mesh(devices, data=data, fsdp=fsdp)
        shardings = parallel.state_shardings(jax.eval_shape(create, init_key), mesh, min_size=16)
        out[name + "_sharded_leaves"] = sum(not s.is_fully_replicated for s in jax.tree.leaves(shardings))
        state = parallel.init_sharded(create, init_key, mesh, shardings)
        step = parallel.compile_train_step(
            make_train_step(family.loss, ema_decay=0.9), mesh, state_sharding=shardings
        )
        losses = []
        for b in batches:
            state, metrics = step(state, parallel.shard_batch(b, mesh), step_key)
            losses.append(float(metrics["loss"]))
        out[name] = losses
        out[name + "_param_sum"] = float(sum(jnp.sum(x) for x in jax.tree.leaves(state.ema_params)))

    # With gradient accumulation, bf16 compute, full remat and the 3 steps fused into one call: 1 device
    # and fsdp=4 alike.
    from gl_jax.train.precision import COMPUTE_DTYPES
    from gl_jax.train.step import REMAT_POLICIES

    fused = {k: np.stack([b[k] for b in batches]) for k in batches[0]}  # [3, 16, 8, 8, 1]
    option_layouts = {"options_1": (jax.devices()[:1], 1), "options_fsdp_4": (jax.devices(), 4)}
    # Only with --options (slow: 4 threads of collectives on a busy 2-core machine can miss XLA's rendezvous).
    for name, (devices, fsdp) in (option_layouts if "--options" in sys.argv else {}).items():
        mesh = parallel.make_mesh(devices, fsdp=fsdp)
        shardings = parallel.state_shardings(jax.eval_shape(create, init_key), mesh, min_size=16)
        state = parallel.init_sharded(create, init_key, mesh, shardings)
        train_step = make_train_step(
            family.loss,
            ema_decay=0.9,
            grad_accum_steps=2,
            compute_dtype=COMPUTE_DTYPES["bfloat16"],
            remat_policy=REMAT_POLICIES["full"],
        )
        step = parallel.compile_train_step(train_step, mesh, state_sharding=shardings, steps_per_call=3)
        state, metrics = step(state, parallel.shard_batch(fused, mesh, steps_per_call=3), step_key)
        out[name] = [float(x) for x in np.asarray(metrics["loss"])]

    # The same initial values as above (the same compiled init), then one copy per device.
    state = parallel.init_replicated(create, init_key, parallel.make_mesh(jax.devices()[:1]))
    state = parallel.replicate_for_pmap(state)
    step = parallel.pmap_train_step(make_train_step(family.loss, ema_decay=0.9, axis_name=parallel.DATA_AXIS))
    losses = []
    for b in batches:
        split = jax.tree.map(lambda x: x.reshape(4, -1, *x.shape[1:]), b)
        state, metrics = step(state, split, step_key)
        losses.append(float(metrics["loss"][0]))
    out["pmap"] = losses
    out["pmap_param_sum"] = float(sum(jnp.sum(x[0]) for x in jax.tree.leaves(state.ema_params)))
    print("RESULT" + json.dumps(out))


if __name__ == "__main__":
    main()
