"""The GAN family: each player gets the gradient of its own objective with the signs the loss implies; R1 of
a constant discriminator; per-player optimizers; spectral normalisation's power iteration through the step."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.families.gan import GAN, GANOptions
from gl_jax.losses.gan import GAN_LOSSES
from gl_jax.models.dcgan import DCGAN, num_doublings
from gl_jax.train import TrainState, make_train_step
from gl_jax.train.optim import make_optimizer

sigmoid = lambda v: 1.0 / (1.0 + math.exp(-v))


class ConstantGenerator(nn.Module):
    """Every sample is the one-pixel image c."""

    @nn.compact
    def __call__(self, z):
        c = self.param("c", nn.initializers.constant(-1.0), ())
        return jnp.full((z.shape[0], 1, 1, 1), c)


class LinearCritic(nn.Module):
    """D(x) = a * x + b on one-pixel images."""

    a: float = 0.5

    @nn.compact
    def __call__(self, x):
        a = self.param("a", nn.initializers.constant(self.a), ())
        b = self.param("b", nn.initializers.zeros, ())
        return a * x[:, 0, 0, 0] + b


class HandMadeGAN(nn.Module):
    latent_dim: int = 1
    a: float = 0.5

    def setup(self):
        self.generator = ConstantGenerator()
        self.discriminator = LinearCritic(self.a)

    def __call__(self, z, *, update_stats=False):
        return self.discriminator(self.generator(z))

    def generate(self, z):
        return self.generator(z)

    def discriminate(self, x, *, update_stats=False):
        return self.discriminator(x)


def _grads(family, params, batch):
    keys = jax.random.split(jax.random.key(0), batch["x"].shape[0])
    return jax.grad(lambda p: family.loss(p, batch, keys)[0])(params)


@pytest.mark.parametrize("objective", GAN_LOSSES)
def test_each_player_gets_the_gradient_of_its_own_objective(objective):
    """Real data x = 1, samples c = -1, D(x) = a x + b with a = 1/2, b = 0: D's logits are r = 1/2 on data
    and f = -1/2 on samples. D improves by raising a (dL_D/da < 0); G by raising c towards the data
    (dL_G/dc = -a dL_G/df... < 0). The closed forms also show that the stop-gradients route each objective
    to its own player only: D's gradient has no L_G term and G's none of L_D."""
    family = GAN(model=HandMadeGAN(), data_shape=(1, 1, 1), options=GANOptions(objective=objective))
    params = family.init(jax.random.key(0))
    grads = _grads(family, params, {"x": jnp.ones((4, 1, 1, 1))})
    d_a, g_c = float(grads["discriminator"]["a"]), float(grads["generator"]["c"])
    if objective == "non_saturating":
        # L_D = softplus(-r) + softplus(f): dL_D/da = -sigmoid(-r) - sigmoid(f); L_G = softplus(-f).
        expected_a, expected_c = -2 * sigmoid(-0.5), -0.5 * sigmoid(0.5)
    else:  # hinge (both margins active) and wasserstein: dL_D/da = -1 - 1; L_G = -f, dL_G/dc = -a.
        expected_a, expected_c = -2.0, -0.5
    np.testing.assert_allclose([d_a, g_c], [expected_a, expected_c], rtol=1e-5)
    assert d_a < 0 and g_c < 0


def test_r1_is_zero_for_a_constant_discriminator():
    family = GAN(model=HandMadeGAN(a=0.0), data_shape=(1, 1, 1), options=GANOptions(r1_weight=10.0))
    params = family.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 1, 1, 1))
    _, metrics = family.loss(params, {"x": x}, jax.random.split(jax.random.key(2), 8))
    assert float(metrics["r1"]) == 0.0
    r1 = GAN(model=HandMadeGAN(a=3.0), data_shape=(1, 1, 1), options=GANOptions(r1_weight=10.0))
    _, metrics = r1.loss(r1.init(jax.random.key(0)), {"x": x}, jax.random.split(jax.random.key(2), 8))
    np.testing.assert_allclose(float(metrics["r1"]), 9.0, rtol=1e-6)  # ||dD/dx||^2 = a^2.


def test_each_player_has_its_own_optimizer_and_the_generator_waits_n_critic_steps():
    family = GAN(
        model=HandMadeGAN(),
        data_shape=(1, 1, 1),
        options=GANOptions(n_critic=2, generator_optim=(("lr", 0.1),), discriminator_optim=(("lr", 0.01),)),
    )
    base = functools.partial(make_optimizer, lr=1.0, grad_clip=0.0)
    tx = family.optimizer(base)
    state = TrainState.create(params=family.init(jax.random.key(0)), tx=tx)
    step = jax.jit(make_train_step(family.loss, ema_decay=0.0))
    batch = {"x": jnp.ones((4, 1, 1, 1))}
    c = lambda s: float(s.params["generator"]["c"])
    a = lambda s: float(s.params["discriminator"]["a"])
    new, _ = step(state, batch, jax.random.key(1))
    # Adam's first update is lr * sign(-g): D moved by its learning rate, G not yet (n_critic = 2).
    np.testing.assert_allclose(a(new) - a(state), 0.01, rtol=1e-3)
    assert c(new) == c(state)
    newer, _ = step(new, batch, jax.random.key(1))
    np.testing.assert_allclose(c(newer) - c(state), 0.1, rtol=1e-3)  # The mean of two gradients of one sign.


class SpectralCritic(nn.Module):
    """A spectrally normalised two-layer critic of 2x2x2 images."""

    @nn.compact
    def __call__(self, x, *, update_stats=False):
        h = nn.SpectralNorm(nn.Dense(6))(x.reshape(x.shape[0], -1), update_stats=update_stats)
        return nn.SpectralNorm(nn.Dense(1))(nn.leaky_relu(h, 0.2), update_stats=update_stats)[:, 0]


class SpectralGAN(nn.Module):
    latent_dim: int = 1

    def setup(self):
        self.generator = nn.Dense(8)
        self.discriminator = SpectralCritic()

    def __call__(self, z, *, update_stats=False):
        return self.discriminate(self.generate(z), update_stats=update_stats)

    def generate(self, z):
        return self.generator(z).reshape(z.shape[0], 2, 2, 2)

    def discriminate(self, x, *, update_stats=False):
        return self.discriminator(x, update_stats=update_stats)


def test_spectral_norm_power_iteration_runs_through_the_shared_step():
    """With frozen weights (lr 0), the power-iteration state the step carries converges to each weight's
    largest singular value (one iteration per step, Miyato et al. 2018)."""
    family = GAN(model=SpectralGAN(), data_shape=(2, 2, 2), options=GANOptions(objective="hinge"))
    params = jax.jit(family.init)(jax.random.key(0))  # Jitted: eager init runs op by op, slowly.
    assert set(params) == {"generator", "discriminator", "spectral"}
    tx = family.optimizer(functools.partial(make_optimizer, lr=0.0, grad_clip=0.0))
    state = TrainState.create(params=params, tx=tx)
    step = jax.jit(make_train_step(family.loss))
    batch = {"x": jax.random.uniform(jax.random.key(1), (4, 2, 2, 2), minval=-1, maxval=1)}
    sigmas = lambda s: {
        str(k): float(v) for k, v in jax.tree_util.tree_leaves_with_path(s) if "sigma" in str(k)
    }
    first = sigmas(state.params["spectral"])
    for _ in range(30):
        state, metrics = step(state, batch, jax.random.key(2))
        assert float(metrics["finite"]) == 1.0
    estimates = sigmas(state.params["spectral"])
    assert estimates != first  # The step did update the state ...
    for layer in ("Dense_0", "Dense_1"):
        kernel = state.params["discriminator"][layer]["kernel"]
        (sigma,) = [v for k, v in estimates.items() if layer in k]
        # ... to the largest singular value of the (unchanged) weight.
        np.testing.assert_allclose(sigma, np.linalg.norm(kernel, ord=2), rtol=1e-4)


@pytest.mark.parametrize(("size", "doublings"), [(8, 2), (28, 2), (32, 3)])
def test_dcgan_sizes(size, doublings):
    assert num_doublings(size) == doublings
    model = DCGAN((size, size, 3), latent_dim=8, generator_width=4, discriminator_width=4)
    family = GAN(model=model, data_shape=(size, size, 3))
    params = jax.eval_shape(family.init, jax.random.key(0))
    images = jax.eval_shape(functools.partial(family.sample, num=2), params, jax.random.key(0))
    assert images.shape == (2, size, size, 3)
    logits = jax.eval_shape(lambda p, x: family.discriminate(p, None, x)[0], params["discriminator"], images)
    assert logits.shape == (2,)
