"""The VAE family: IWAE >= ELBO on the same samples and tighter with K in expectation; bits/dim conventions
of the three decoders; options checked at the boundary."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gl_jax.families.build import build_vae, vae_from_options
from gl_jax.families.vae import VAEOptions
from gl_jax.losses.vae import iwae_bound
from gl_jax.spec import DataSpec

DIGITS = DataSpec("sklearn_digits", "image", (8, 8, 1), 17, 10, {"train": 1437, "test": 360})
TINY = {"name": "conv_vae", "latent_channels": 2, "width": 8, "channel_mults": (1, 2), "num_res_blocks": 1}


def _images(n, seed=0):
    """Digit-like images: integer levels of a smooth random field, as the pipeline scales them."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(n, 4, 4, 1)).repeat(2, 1).repeat(2, 2)
    k = np.clip(np.round(8 + 6 * field), 0, 16)
    return jnp.asarray(2 * k / 16 - 1, jnp.float32)


def test_iwae_is_above_the_elbo_and_tightens_with_k(digits_vae):
    family, params, x = digits_vae.family, digits_vae.state.ema_params, digits_vae.test_x[:64]
    log_w = jax.jit(functools.partial(family.log_weights, num_samples=64))(params, x, jax.random.key(1))
    iwae, elbo = iwae_bound(log_w), jnp.mean(log_w, axis=0)
    # Jensen on the same samples: log mean exp >= mean log, example by example.
    assert np.all(np.asarray(iwae) >= np.asarray(elbo))
    # In expectation IWAE_1 <= IWAE_4 <= IWAE_16 <= IWAE_64 (Burda et al. 2016, theorem 1): estimate
    # IWAE_k by the mean over 64 / k disjoint groups of the 64 samples, and over the 64 examples.
    means = [float(jnp.mean(iwae_bound(log_w.reshape(k, 64 // k, -1)))) for k in (1, 4, 16, 64)]
    print("IWAE_k bits/dim, k = 1, 4, 16, 64:", [float(family.bits_from_nats(m)) for m in means])
    assert means == sorted(means) and means[-1] > means[0] + 0.5, means
    # The bits/dim of a discrete decoder carry no dequantization offset.
    np.testing.assert_allclose(family.bits_from_nats(-jnp.log(17.0) * 64), math.log2(17), rtol=1e-6)


def test_training_loss_is_the_negative_elbo_per_dimension(digits_vae):
    family, params, x = digits_vae.family, digits_vae.state.ema_params, digits_vae.test_x[:16]
    loss, metrics = jax.jit(family.loss)(params, {"x": x}, jax.random.split(jax.random.key(1), 16))
    np.testing.assert_allclose(float(loss) / math.log(2), float(metrics["elbo_bpd"]), rtol=1e-5)
    np.testing.assert_allclose(
        float(metrics["elbo_bpd"]), float(metrics["recon_bpd"] + metrics["kl_bpd"]), rtol=1e-5
    )


def test_gaussian_decoder_models_dequantized_data_with_the_offset():
    family = vae_from_options(TINY, VAEOptions(decoder="gaussian"), DIGITS, dequantized=False)
    keys = jax.random.split(jax.random.key(0), 8)
    x = _images(8)
    x_in, target = family.targets(x, keys)
    np.testing.assert_array_equal(x_in, x)  # The encoder sees the clean image.
    k = np.round((np.asarray(x) + 1) * 8)
    u = (np.asarray(target) + 1) * 17 / 2 - k  # target = 2 (k + u) / 17 - 1
    assert np.all((u >= 0) & (u < 1))
    # A uniform density on [-1, 1]^D is log2(L) bits/dim of the discrete data (Theis et al. 2016).
    np.testing.assert_allclose(family.bits_from_nats(-64 * jnp.log(2.0)), math.log2(17), rtol=1e-6)


def test_options_are_checked_at_the_boundary():
    config = ml_collections.ConfigDict({"family": "vae", "model": TINY, "vae": {"decodr": "gaussian"}})
    config.data = ml_collections.ConfigDict({"dequantize": False})
    with pytest.raises(ValueError, match=r"config\.vae\.decodr.*did you mean 'config\.vae\.decoder'"):
        build_vae(config, DIGITS)
    config.vae = {"decoder": "poisson"}
    with pytest.raises(ValueError, match="config.vae: Unknown decoder 'poisson'"):
        build_vae(config, DIGITS)
    config.vae = {}
    config.model = {**TINY, "widht": 3}
    with pytest.raises(ValueError, match=r"config\.model\.widht.*config\.model\.width"):
        build_vae(config, DIGITS)


@pytest.mark.parametrize("dequantized", [False, True])
def test_reported_bits_per_dim_is_the_iwae_bound_of_the_stored_levels(digits_vae, dequantized):
    """`--mode eval` hands `bits_per_dim` the dataset's integer levels: in either pipeline convention the
    family recovers exactly those levels and reports the IWAE bound of the pipeline's images."""
    import dataclasses

    family = dataclasses.replace(
        digits_vae.family, dequantized=dequantized, options=VAEOptions(decoder="logistic", iwae_samples=8)
    )
    params, x = digits_vae.state.ema_params, digits_vae.test_x[:16]  # Plain-scaled pipeline images.
    k = jnp.round((x + 1) * 8).astype(jnp.int32)  # The stored levels, 0..16.
    bpd, nfe = jax.jit(family.bits_per_dim)(params, jax.random.key(3), k, None)
    assert bpd.shape == (16,) and int(nfe) == 8
    want, _ = family.log_likelihood(params, x, jax.random.key(3), num_samples=8)
    # In both conventions the encoder sees and the decoder scores the same levels: the same bound.
    np.testing.assert_allclose(bpd, family.bits_from_nats(want), rtol=1e-5)
    # A discrete model's bound is positive, and the trained VAE beats the uniform model's log2(17).
    assert np.all(np.asarray(bpd) > 0) and float(jnp.mean(bpd)) < math.log2(17)
