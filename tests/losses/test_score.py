"""Denoising score matching against Gaussian data, whose noised marginals have exact scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.losses.score import denoising_score_matching
from gl_jax.sde import VPSDE

MU, S = 0.7, 0.4  # Data ~ N(MU, S^2 I).
D = 4


def exact_score(sde, scale=1.0, shift=0.0):
    """Score of x_t ~ N(alpha MU, (alpha^2 S^2 + sigma^2) I), optionally perturbed: scale * s + shift."""

    def score(x, t):
        a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        return scale * (-(x - a * MU) / (a**2 * S**2 + s**2)) + shift

    return score


def data(n, seed=0):
    return MU + S * jax.random.normal(jax.random.key(seed), (n, D))


def test_loss_with_exact_score_equals_closed_form():
    """E || sigma s* + eps ||^2 / D = E_t[alpha^2 S^2 / (alpha^2 S^2 + sigma^2)] (derivation in the test)."""
    sde = VPSDE()
    loss, _ = denoising_score_matching(jax.random.key(1), exact_score(sde), sde, data(200_000))
    t = jnp.linspace(sde.t_min, sde.T, 20_001)
    a2 = sde.alpha(t) ** 2
    expected = float(jnp.mean(a2 * S**2 / (a2 * S**2 + sde.sigma(t) ** 2)))
    assert abs(float(loss) - expected) < 0.01 * expected + 1e-3


def test_exact_score_is_the_minimiser():
    """The gradient wrt a perturbation of the exact score vanishes there (in expectation), not elsewhere."""
    sde = VPSDE()
    x0 = data(100_000, seed=2)
    keys = jax.random.split(jax.random.key(3), x0.shape[0])

    def loss_at(params, keys, x0):
        scale, shift = params
        return denoising_score_matching(keys, exact_score(sde, 1.0 + scale, shift), sde, x0)[0]

    # Per-example gradients give the standard error of the mean gradient.
    per_example = jax.vmap(jax.grad(loss_at), in_axes=(None, 0, 0))
    g = np.asarray(jnp.stack(per_example((0.0, 0.0), keys[:, None], x0[:, None]), -1))  # [N, 2]
    mean, se = g.mean(0), g.std(0) / np.sqrt(len(g))
    assert np.all(np.abs(mean) < 3 * se), (mean, se)
    g_off = np.asarray(jnp.stack(per_example((0.3, 0.2), keys[:, None], x0[:, None]), -1)).mean(0)
    assert np.all(np.abs(g_off) > 10 * se), (g_off, se)
    l_exact = loss_at((0.0, 0.0), keys, x0)
    assert loss_at((0.1, 0.0), keys, x0) > l_exact and loss_at((0.0, -0.1), keys, x0) > l_exact


def test_per_example_keys_make_loss_independent_of_batch_split():
    sde = VPSDE()
    x0 = data(64)
    keys = jax.random.split(jax.random.key(4), 64)
    whole = denoising_score_matching(keys, exact_score(sde), sde, x0)[0]
    halves = [
        denoising_score_matching(keys[i : i + 32], exact_score(sde), sde, x0[i : i + 32])[0] for i in (0, 32)
    ]
    np.testing.assert_allclose(whole, np.mean(halves), rtol=1e-6)


def test_reduce_sum_scales_by_dimension():
    sde = VPSDE()
    mean_loss = denoising_score_matching(jax.random.key(0), exact_score(sde), sde, data(256))[0]
    sum_loss = denoising_score_matching(jax.random.key(0), exact_score(sde), sde, data(256), reduce="sum")[0]
    np.testing.assert_allclose(sum_loss, D * mean_loss, rtol=1e-5)


def test_bad_options_are_named():
    sde = VPSDE()
    with pytest.raises(ValueError, match="weighting"):
        denoising_score_matching(jax.random.key(0), exact_score(sde), sde, data(8), weighting="nope")
    with pytest.raises(ValueError, match="per-example keys"):
        denoising_score_matching(jax.random.split(jax.random.key(0), 3), exact_score(sde), sde, data(8))
