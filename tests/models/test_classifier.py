"""The noise-conditional classifier: logits shape, smoke step, encoder shared with the U-Net."""

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.models import NoisyClassifier, UNet, UNetEncoder
from tests.models._smoke import KEY, fast_jit, num_params, random_params


def test_tiny_classifier_runs_and_differentiates():
    model = NoisyClassifier.from_variant("tiny", num_classes=5)
    cond = jnp.array([0.3, 2.0])
    small = jax.random.normal(KEY, (2, 8, 8, 1))
    labels = jnp.array([1, 4])

    def loss(p):
        logits = model.apply(p, small, cond, train=True, rngs={"dropout": jax.random.key(2, impl="rbg")})
        # Cross-entropy of the labels; the classifier's log p(y | x_t) is log_softmax(logits).
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)), logits

    (value, logits), grads = fast_jit(jax.value_and_grad(loss, has_aux=True))(
        random_params(model, small, cond)
    )
    assert logits.shape == (2, 5) and np.isfinite(value)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))

    big = jax.random.normal(KEY, (2, 32, 32, 3))
    logits = fast_jit(model.apply)(random_params(model, big, cond), big, cond)
    assert logits.shape == (2, 5) and np.isfinite(logits).all()


def test_classifier_is_the_unet_encoder_plus_a_head():
    shape = (1, 32, 32, 3)
    encoder = num_params(UNetEncoder.from_variant("ddpmpp-cifar10", channels=64, num_res_blocks=2), shape)
    classifier = num_params(NoisyClassifier.from_variant("ddpmpp-cifar10", num_classes=10), shape)
    channels = 64 * 2
    assert classifier - encoder == 2 * channels + (channels * 10 + 10)  # final GroupNorm and linear head
    # The encoder's parameters are a subset of the U-Net's (same names, same shapes).
    unet = jax.eval_shape(UNet.from_variant("tiny").init, KEY, jnp.ones((1, 8, 8, 1)), jnp.ones((1,)))
    enc = jax.eval_shape(UNetEncoder.from_variant("tiny").init, KEY, jnp.ones((1, 8, 8, 1)), jnp.ones((1,)))
    for name, leaves in enc["params"].items():
        assert jax.tree.map(lambda a: a.shape, leaves) == jax.tree.map(
            lambda a: a.shape, unet["params"][name]
        )


def test_noisy_classifier_of_a_named_size():
    model = NoisyClassifier.from_variant("tiny", num_classes=7)
    out = jax.eval_shape(model.init_with_output, KEY, jnp.ones((3, 8, 8, 1)), jnp.ones((3,)))[0]
    assert out.shape == (3, 7)
