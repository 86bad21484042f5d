"""The `chex` checks at the math layer's public boundaries: wrong shapes fail when traced, with and without
`jax.jit` (`chex.variants`), and right ones give the closed-form answers."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.likelihood import bits_per_dim, ode_log_likelihood
from gl_jax.losses.score import denoising_score_matching
from gl_jax.sde import VPSDE

SDE = VPSDE(beta_min=0.1, beta_max=20.0)


class BoundaryChecksTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_bits_per_dim_of_the_uniform_density_is_log2_levels(self):
        # A uniform density on [-1, 1]^D, log p = -D ln 2, is log2(levels) bits per dimension.
        bpd = self.variant(lambda logp: bits_per_dim(logp, num_dims=64, levels=17))
        np.testing.assert_allclose(bpd(jnp.full((3,), -64 * math.log(2.0))), math.log2(17), rtol=1e-6)

    def test_bits_per_dim_needs_positive_num_dims(self):
        with pytest.raises(AssertionError, match="must be positive"):
            bits_per_dim(jnp.zeros(3), num_dims=0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_exact_noise_prediction_has_zero_loss(self):
        # Data x0 = 0: x_t = sigma(t) eps, so x_t / sigma(t) is the exact noise and the loss is 0.
        def model(x_t, t):
            return x_t / SDE.marginal(jnp.zeros_like(x_t), t)[1]

        loss = self.variant(lambda key, x0: denoising_score_matching(key, model, SDE, x0, prediction="eps"))
        np.testing.assert_allclose(loss(jax.random.key(0), jnp.zeros((16, 4)))[0], 0.0, atol=1e-8)

    @chex.variants(with_jit=True, without_jit=True)
    def test_model_output_of_another_shape_fails(self):
        x0 = jnp.zeros((8, 4, 4, 1))
        flat = lambda x_t, t: x_t.reshape(len(x_t), -1)  # [B, 16] for data [B, 4, 4, 1]
        loss = self.variant(lambda key, x0: denoising_score_matching(key, flat, SDE, x0, prediction="eps"))
        with pytest.raises(AssertionError, match="shaped like x_t"):
            loss(jax.random.key(0), x0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_score_of_another_shape_fails_the_likelihood(self):
        x = jnp.zeros((4, 2))
        first = lambda x_t, t: x_t[:, :1]  # [B, 1] for data [B, 2]
        logp = self.variant(lambda x: ode_log_likelihood(None, first, SDE, x, trace="exact").logp)
        with pytest.raises(AssertionError, match="shaped like x"):
            logp(x)
