"""Runs 3 train steps of every new family on 1 device and on a 4-device mesh and prints the losses as JSON.

Each family trains with its own optimizer (`family.optimizer(base)`) through the shared `make_train_step`
and `compile_train_step`. Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4;
`python -m tests.families._three_steps gan vae` runs some of them.
"""

import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.families.autoregressive import Autoregressive
from gl_jax.families.build import vae_from_options
from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.families.gan import GAN, GANOptions
from gl_jax.families.latent import LatentDiffusion
from gl_jax.families.vae import VAEOptions
from gl_jax.models import SmallUNet
from gl_jax.models.dcgan import DCGAN
from gl_jax.models.transformer import Transformer
from gl_jax.sde import VPSDE
from gl_jax.spec import DataSpec
from gl_jax.train import TrainState, make_train_step, parallel
from gl_jax.train.optim import make_optimizer

SPEC = DataSpec("digits", "image", (8, 8, 1), 17, 10, {})
VAE_MODEL = {"name": "conv_vae", "latent_channels": 2, "width": 4, "channel_mults": (1, 2)}


def families():
    """Small instances that use every source of per-example randomness each family has."""
    vae = vae_from_options(VAE_MODEL, VAEOptions(decoder="gaussian"), SPEC, dequantized=True)
    return {
        # Both penalties (R1 on data, WGAN-GP's interpolation weight per example) and spectral norm.
        "gan": GAN(
            model=DCGAN(
                (8, 8, 1), latent_dim=4, generator_width=4, discriminator_width=4, spectral_norm=True
            ),
            data_shape=(8, 8, 1),
            options=GANOptions(
                objective="hinge", r1_weight=1.0, gp_weight=1.0, generator_optim=(("lr", 2e-3),)
            ),
        ),
        # Dequantization noise and the latent sample.
        "vae": vae,
        "autoregressive": Autoregressive(
            model=Transformer(vocab_size=17, max_len=64, num_layers=1, d_model=8, num_heads=2),
            data_shape=(8, 8, 1),
            vocab_size=17,
            dequantized=True,
        ),
        # The encoder's sample and the diffusion loss's times and noise.
        "latent": LatentDiffusion(
            vae=vae,
            diffusion=ScoreDiffusion(
                model=SmallUNet(channels=4, channel_mults=(1,), num_res_blocks=1),
                sde=VPSDE(),
                data_shape=vae.latent_shape,
            ),
        ),
    }


def main(names):
    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    # Dequantized digit levels, as the pipeline makes them with config.data.dequantize=True.
    levels = rng.integers(0, 17, (3, 8, 8, 8, 1))
    x = (2 * (levels + rng.uniform(size=levels.shape)) / 17 - 1).astype(np.float32)
    batches = [{"x": x[i]} for i in range(3)]
    base = functools.partial(make_optimizer, lr=1e-3, warmup_steps=2, grad_clip=1.0)
    out = {}
    for name, family in families().items():
        if names and name not in names:
            continue
        tx = family.optimizer(base)
        layouts = (("jit_1", jax.devices()[:1], 1), ("jit_4", jax.devices(), 1), ("fsdp_4", jax.devices(), 4))
        for layout, devices, fsdp in layouts:
            mesh = parallel.make_mesh(devices, fsdp=fsdp)

            def create(k, f=family, tx=tx):
                return TrainState.create(params=f.init(k), tx=tx)

            shardings = parallel.state_shardings(jax.eval_shape(create, jax.random.key(0)), mesh, min_size=16)
            state = parallel.init_sharded(create, jax.random.key(0), mesh, shardings)
            step = parallel.compile_train_step(
                make_train_step(family.loss, ema_decay=0.9), mesh, state_sharding=shardings
            )
            losses = []
            for b in batches:
                state, metrics = step(state, parallel.shard_batch(b, mesh), jax.random.key(1))
                losses.append(float(metrics["loss"]))
            out[f"{name}/{layout}"] = losses
            out[f"{name}/{layout}/param_sum"] = float(sum(jnp.sum(x) for x in jax.tree.leaves(state.params)))
    print("RESULT" + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
