"""Token NLL: the log-softmax at the target, the input shift, bits/dim of a uniform model."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.losses.autoregressive import nll_to_bits_per_dim, shift_right, token_nll


def test_token_nll_is_minus_log_softmax_at_the_target():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 5))
    targets = jnp.array([[0, 4, 2], [1, 1, 3]])
    p = np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(-1, keepdims=True)
    expected = -np.log(np.take_along_axis(p, np.asarray(targets)[..., None], -1)[..., 0])
    np.testing.assert_allclose(token_nll(logits, targets), expected, rtol=1e-5)


def test_uniform_model_has_log2_vocab_bits_per_dim_and_inputs_shift_right():
    nll = jnp.mean(token_nll(jnp.zeros((4, 6, 17)), jnp.zeros((4, 6), jnp.int32)))
    np.testing.assert_allclose(nll_to_bits_per_dim(nll), math.log2(17), rtol=1e-6)
    np.testing.assert_array_equal(shift_right(jnp.array([[3, 4, 5]]), bos=9), [[9, 3, 4]])
