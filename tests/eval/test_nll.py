"""Mean NLL under an exact log-density."""

import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.eval.nll import mean_nll


def _std_normal_logp(x):
    return -0.5 * jnp.sum(x**2, axis=1) - 0.5 * x.shape[1] * jnp.log(2 * jnp.pi)


def test_standard_normal_entropy_and_batching():
    d = 3
    x = np.random.default_rng(0).normal(size=(20_000, d)).astype(np.float32)
    whole = mean_nll(_std_normal_logp, x)
    # E[-log p] under the model's own samples is its entropy, D/2 log(2 pi e).
    assert whole.mean == pytest.approx(0.5 * d * np.log(2 * np.pi * np.e), abs=4 * whole.stderr)
    batched = mean_nll(_std_normal_logp, x, batch_size=3000)  # last batch smaller
    assert batched.num == 20_000 and batched.mean == pytest.approx(whole.mean, rel=1e-6)


def test_rejects_wrong_output_shape():
    with pytest.raises(ValueError, match="one log-density per point"):
        mean_nll(lambda x: jnp.zeros(()), np.zeros((4, 2)))
