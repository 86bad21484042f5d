"""A VAE trained briefly on the digits, shared by the VAE and latent-diffusion tests (trained once)."""

from typing import Any, NamedTuple

import jax
import pytest

from gl_jax.data.pipeline import load_arrays, make_dataset
from gl_jax.data.sources import open_dataset
from gl_jax.families.build import vae_from_options
from gl_jax.families.vae import VAE, VAEOptions
from gl_jax.train import TrainState, make_optimizer, make_train_step
from gl_jax.train.checkpoint import Checkpointer

VAE_MODEL = {
    "name": "conv_vae",
    "latent_channels": 2,
    "width": 16,
    "channel_mults": (1, 2),
    "num_res_blocks": 1,
}
VAE_STEPS = 200


class TrainedVAE(NamedTuple):
    family: VAE
    state: TrainState
    workdir: str  # Holds `checkpoints/`, written by the trainer's Checkpointer.
    test_x: Any  # 128 test images [128, 8, 8, 1] in [-1, 1].


@pytest.fixture(scope="session")
def digits_vae(data_dir, tmp_path_factory) -> TrainedVAE:
    spec, sources = open_dataset("sklearn_digits", data_dir=data_dir)
    family = vae_from_options(VAE_MODEL, VAEOptions(decoder="logistic"), spec, dequantized=False)
    data = make_dataset(load_arrays(sources["train"], spec), spec, batch_size=64, seed=0)
    state = TrainState.create(params=jax.jit(family.init)(jax.random.key(0)), tx=make_optimizer(lr=3e-3))
    step = jax.jit(make_train_step(family.loss, ema_decay=0.9))
    for i in range(VAE_STEPS):
        state, _ = step(state, data[i], jax.random.key(1))
    workdir = tmp_path_factory.mktemp("vae_run")
    checkpointer = Checkpointer(str(workdir / "checkpoints"))
    checkpointer.save(state, {"index": VAE_STEPS})
    checkpointer.close()
    test = make_dataset(load_arrays(sources["test"], spec), spec, batch_size=128, seed=0, shuffle=False)[0]
    return TrainedVAE(family, state, str(workdir), test["x"])
