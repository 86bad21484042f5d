"""Prediction conversions are exact inverses and agree with the analytic test bed; EDM preconditioning."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.analytic import random_mixture
from gl_jax.parametrization import PREDICTIONS, convert, edm_preconditioning
from gl_jax.sde import VESDE, VPSDE, RectifiedFlow


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(), RectifiedFlow()], ids=["vp", "ve", "rf"])
@pytest.mark.parametrize("source, target", list(itertools.permutations(PREDICTIONS, 2)))
def test_roundtrips_are_identities(sde, source, target):
    key_x, key_p = jax.random.split(jax.random.key(0))
    t = jnp.linspace(0.05, 0.95, 8) * sde.T
    alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    x_t = jax.random.normal(key_x, (8, 5)) * sigma
    pred = jax.random.normal(key_p, (8, 5))
    there = convert(pred, source=source, target=target, x_t=x_t, alpha=alpha, sigma=sigma)
    back = convert(there, source=target, target=source, x_t=x_t, alpha=alpha, sigma=sigma)
    np.testing.assert_allclose(back, pred, rtol=2e-4, atol=2e-4)


def test_conversions_agree_with_exact_mixture_quantities():
    sde, gmm = VPSDE(), random_mixture(3, seed=1)
    t = jnp.linspace(0.1, 0.9, 16)
    x = gmm.sample(jax.random.key(2), 16)
    alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    x_t = alpha * x + sigma * jax.random.normal(jax.random.key(3), x.shape)
    eps = gmm.eps_fn(sde)(x_t, t)
    kw = dict(x_t=x_t, alpha=alpha, sigma=sigma)
    np.testing.assert_allclose(
        convert(eps, source="eps", target="score", **kw), gmm.score_fn(sde)(x_t, t), rtol=1e-5
    )
    np.testing.assert_allclose(
        convert(eps, source="eps", target="x0", **kw), gmm.denoiser_fn(sde)(x_t, t), rtol=1e-4, atol=1e-4
    )
    # v = alpha eps - sigma x0 for the VP SDE also equals (x_t-derivative form) alpha eps - sigma x0_hat.
    x0 = gmm.denoiser_fn(sde)(x_t, t)
    np.testing.assert_allclose(
        convert(eps, source="eps", target="v", **kw), alpha * eps - sigma * x0, atol=1e-4
    )


def test_denoised_is_tweedie_and_the_x0_conversion():
    from gl_jax.parametrization import denoised

    x_t, score, alpha, sigma = jnp.array([[0.3, -1.0]]), jnp.array([[2.0, 0.5]]), 0.8, 0.6
    np.testing.assert_allclose(denoised(score, x_t, alpha, sigma), (x_t + 0.36 * score) / 0.8, rtol=1e-6)
    want = convert(score, source="score", target="x0", x_t=x_t, alpha=alpha, sigma=sigma)
    np.testing.assert_allclose(denoised(score, x_t, alpha, sigma), want, rtol=1e-6)


def test_unknown_prediction_is_named():
    with pytest.raises(ValueError, match="Unknown prediction"):
        convert(jnp.ones(2), source="eps", target="noise", x_t=jnp.ones(2), alpha=1.0, sigma=1.0)


def test_edm_preconditioning():
    sigma = jnp.array([0.002, 0.1, 0.5, 1.0, 80.0])
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data=0.5)
    np.testing.assert_allclose(c_skip, 0.25 / (sigma**2 + 0.25), rtol=1e-6)
    np.testing.assert_allclose(c_in, 1 / jnp.sqrt(sigma**2 + 0.25), rtol=1e-6)
    np.testing.assert_allclose(c_noise, jnp.log(sigma) / 4, rtol=1e-6)
    # Karras et al. 2022, appendix B.6: the network's input and its training target both have unit variance
    # when the data has variance sigma_d^2.
    np.testing.assert_allclose(c_in**2 * (0.25 + sigma**2), 1.0, rtol=1e-6)
    target_var = ((1 - c_skip) ** 2 * 0.25 + c_skip**2 * sigma**2) / c_out**2
    np.testing.assert_allclose(target_var, 1.0, rtol=1e-5)
