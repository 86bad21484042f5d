"""Latent diffusion: a briefly trained VAE reconstructs digits through its latents; the VAE comes from a
checkpoint the trainer's Checkpointer wrote, is checked against the config, and stays frozen in training."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.data.sources import open_dataset
from gl_jax.families import build_family
from gl_jax.families.build import vae_from_options
from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.families.latent import LatentDiffusion
from gl_jax.families.vae import VAEOptions
from gl_jax.samplers import euler_maruyama
from gl_jax.sde import VPSDE
from gl_jax.train import TrainState, make_optimizer, make_train_step
from gl_jax.train.saved_params import load_params
from tests.conftest import load_config
from tests.families.conftest import VAE_MODEL


def test_encode_decode_round_trip_error_is_bounded(digits_vae):
    family, state, _, x = digits_vae
    mean, _ = jax.jit(family.encode)(state.ema_params, x)
    assert mean.shape == (128, 4, 4, 2)
    recon = jax.jit(family.decode_mean)(state.ema_params, mean)
    error = float(jnp.mean(jnp.abs(recon - x)))
    baseline = float(jnp.mean(jnp.abs(jnp.mean(x, axis=0) - x)))  # The mean image for every digit.
    assert error < 0.2 and error < 0.5 * baseline, (error, baseline)


def _config(vae_dir):
    config = load_config("digits_latent", "smoke")
    config.latent.vae_checkpoint = vae_dir
    config.latent.allow_random_vae = False
    config.latent.vae_model = VAE_MODEL
    config.latent.vae = {"decoder": "logistic"}
    return config


class TinyDenoiser(nn.Module):
    """eps_hat(z, t): a 1x1 convolution plus a time-dependent bias (cheap to compile; it need not be good)."""

    @nn.compact
    def __call__(self, z, t):
        return nn.Conv(z.shape[-1], (1, 1))(z) + nn.Dense(z.shape[-1])(t[:, None])[:, None, None, :]


def test_the_vae_comes_from_the_checkpoint_and_stays_frozen(digits_vae, data_dir):
    _, state, vae_dir, x = digits_vae
    spec, _ = open_dataset("sklearn_digits", data_dir=data_dir)
    built = build_family(_config(vae_dir), spec, load_params=load_params)
    assert isinstance(built, LatentDiffusion) and built.vae.latent_shape == (4, 4, 2)
    for a, b in zip(jax.tree.leaves(built.vae_params), jax.tree.leaves(state.ema_params), strict=True):
        np.testing.assert_array_equal(a, b)
    # The same family with a network that compiles in a moment instead of the config's U-Net.
    diffusion = ScoreDiffusion(
        model=TinyDenoiser(),
        sde=VPSDE(),
        data_shape=(4, 4, 2),
        sampler=functools.partial(euler_maruyama, steps=5),
    )
    family = dataclasses.replace(built, diffusion=diffusion)
    tx = family.optimizer(functools.partial(make_optimizer, optimizer="adamw", weight_decay=0.1))
    latent_state = TrainState.create(params=jax.jit(family.init)(jax.random.key(0)), tx=tx)
    step = jax.jit(make_train_step(family.loss))
    new, metrics = step(latent_state, {"x": x[:16]}, jax.random.key(1))
    assert float(metrics["finite"]) == 1.0 and 0.1 < float(metrics["latent_ms"]) < 10.0
    for a, b in zip(jax.tree.leaves(new.params["vae"]), jax.tree.leaves(state.ema_params), strict=True):
        np.testing.assert_array_equal(a, b)  # Weight decay would have moved them; set_to_zero does not.
    old_diffusion, new_diffusion = (jax.tree.leaves(s.params["diffusion"]) for s in (latent_state, new))
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(old_diffusion, new_diffusion, strict=True)]
    assert max(moved) > 0  # The diffusion network did move.
    images = jax.jit(lambda p, k: family.sample(p, k, 2))(new.params, jax.random.key(2))
    assert images.shape == (2, 8, 8, 1) and np.all(np.abs(np.asarray(images)) <= 1)


def test_a_checkpoint_of_another_vae_is_refused(digits_vae, data_dir):
    vae_dir = digits_vae.workdir
    spec, _ = open_dataset("sklearn_digits", data_dir=data_dir)
    config = _config(vae_dir)
    config.latent.vae_model = {**VAE_MODEL, "width": 8}
    with pytest.raises(ValueError, match="holds other parameters.*config.latent.vae_model"):
        build_family(config, spec, load_params=load_params)
    config = _config(str(vae_dir) + "/nowhere")
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        build_family(config, spec, load_params=load_params)
    config = _config("")
    with pytest.raises(ValueError, match="vae_checkpoint is empty"):
        build_family(config, spec, load_params=load_params)
    target = jax.eval_shape(
        vae_from_options(VAE_MODEL, VAEOptions(), spec, dequantized=False).init, jax.random.key(0)
    )
    assert jax.tree.structure(load_params(vae_dir, target, use_ema=False)) == jax.tree.structure(target)
