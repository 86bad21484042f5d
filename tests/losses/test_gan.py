"""GAN objectives: closed forms at chosen logits, R1 of constant and linear critics, WGAN-GP's penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.losses.gan import GAN_LOSSES, discriminator_loss, generator_loss, gradient_penalty, r1_penalty

REAL = jnp.array([2.0, -1.0, 0.5])
FAKE = jnp.array([-3.0, 0.5, 1.5])


def test_losses_match_their_closed_forms():
    softplus = lambda v: np.log1p(np.exp(v))
    r, f = np.asarray(REAL), np.asarray(FAKE)
    expected = {
        "non_saturating": (softplus(-r) + softplus(f), softplus(-f)),
        "hinge": (np.maximum(0, 1 - r) + np.maximum(0, 1 + f), -f),
        "wasserstein": (f - r, -f),
    }
    for name in GAN_LOSSES:
        d, g = expected[name]
        np.testing.assert_allclose(discriminator_loss(REAL, FAKE, loss=name), d, rtol=1e-6)
        np.testing.assert_allclose(generator_loss(FAKE, loss=name), g, rtol=1e-6)
    with pytest.raises(ValueError, match="Unknown GAN loss"):
        generator_loss(FAKE, loss="minimax")


@pytest.mark.parametrize("name", GAN_LOSSES)
def test_each_player_pushes_the_logits_its_way(name):
    """D lowers its loss by raising real logits and lowering fake ones; G by raising fake logits."""
    d_real, d_fake = jax.grad(lambda r, f: jnp.sum(discriminator_loss(r, f, loss=name)), argnums=(0, 1))(
        jnp.zeros(3), jnp.zeros(3)
    )
    g_fake = jax.grad(lambda f: jnp.sum(generator_loss(f, loss=name)))(jnp.zeros(3))
    assert np.all(d_real < 0) and np.all(d_fake > 0) and np.all(g_fake < 0)


def test_r1_is_zero_for_a_constant_critic_and_the_squared_weight_norm_for_a_linear_one():
    x = jax.random.normal(jax.random.key(0), (5, 4, 4, 1))
    np.testing.assert_array_equal(r1_penalty(lambda y: jnp.full(y.shape[0], 3.0), x), np.zeros(5))
    w = jax.random.normal(jax.random.key(1), (4, 4, 1))
    linear = lambda y: jnp.sum(y * w, axis=(1, 2, 3))
    np.testing.assert_allclose(r1_penalty(linear, x), np.full(5, float(jnp.sum(w**2))), rtol=1e-5)
    # Per example: a critic x -> x_i^2 summed has gradient 2 x_i for example i alone.
    square = lambda y: jnp.sum(y**2, axis=(1, 2, 3))
    np.testing.assert_allclose(
        r1_penalty(square, x), 4 * np.sum(np.asarray(x) ** 2, axis=(1, 2, 3)), rtol=1e-5
    )


def test_gradient_penalty_vanishes_for_a_unit_slope_critic():
    x, y = jax.random.normal(jax.random.key(0), (2, 6, 3))
    eps = jax.random.uniform(jax.random.key(1), (6,))
    w = jnp.array([0.6, 0.0, 0.8])  # ||w|| = 1: a 1-Lipschitz linear critic.
    np.testing.assert_allclose(gradient_penalty(lambda v: v @ w, x, y, eps), np.zeros(6), atol=1e-6)
    np.testing.assert_allclose(gradient_penalty(lambda v: 3 * v @ w, x, y, eps), np.full(6, 4.0), rtol=1e-5)
