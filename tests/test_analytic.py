"""The analytic test bed: exact densities, scores (against autodiff), denoisers and samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gl_jax.analytic import GaussianMixture, gaussian, random_mixture
from gl_jax.sde import EDMSDE, VESDE, VPSDE, RectifiedFlow, SubVPSDE

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(), "edm": EDMSDE(), "rf": RectifiedFlow()}


def test_log_prob_matches_scipy_for_diagonal_mixture():
    rng = np.random.default_rng(0)
    gmm = GaussianMixture(np.array([0.2, 0.5, 0.3]), rng.normal(size=(3, 4)), rng.uniform(0.3, 1.0, (3, 4)))
    x = rng.normal(size=(10, 4)).astype(np.float32)
    expected = np.log(
        sum(
            w * stats.multivariate_normal(m, np.diag(s**2)).pdf(x)
            for w, m, s in zip(gmm.weights, gmm.means, gmm.stds, strict=True)
        )
    )
    np.testing.assert_allclose(gmm.log_prob(jnp.asarray(x)), expected, rtol=1e-5)


@pytest.mark.parametrize("name", SDES)
def test_score_is_gradient_of_marginal_log_prob(name):
    sde, gmm = SDES[name], random_mixture(6, seed=3)
    t = jnp.linspace(sde.t_min, sde.T, 12)
    x = gmm.sample(jax.random.key(0), 12) * sde.alpha(t)[:, None] + sde.sigma(t)[:, None]
    grad = jax.grad(lambda x: jnp.sum(gmm.marginal_log_prob(sde, x, t)))(x)
    np.testing.assert_allclose(gmm.score_fn(sde)(x, t), grad, rtol=1e-4, atol=1e-4)


def test_gaussian_denoiser_matches_closed_form():
    sde, mu, s = VPSDE(), 0.7, 0.4
    g = gaussian(np.full(2, mu), s)
    t = jnp.linspace(0.01, 1.0, 9)
    x = jax.random.normal(jax.random.key(0), (9, 2))
    a, sg = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    expected = mu + a * s**2 / (a**2 * s**2 + sg**2) * (x - a * mu)
    np.testing.assert_allclose(g.denoiser_fn(sde)(x, t), expected, rtol=1e-4, atol=1e-5)


def test_samples_match_moments():
    gmm = random_mixture(3, seed=5)
    x = np.asarray(gmm.sample(jax.random.key(1), 200_000))
    np.testing.assert_allclose(x.mean(0), gmm.mean(), atol=0.01)
    np.testing.assert_allclose(np.cov(x.T), gmm.covariance(), atol=0.02)
    y = gmm.sample_numpy(np.random.default_rng(0), 200_000)
    np.testing.assert_allclose(y.mean(0), gmm.mean(), atol=0.01)


def test_bad_mixture_is_named():
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture(np.array([0.5, 0.2]), np.zeros((2, 2)), np.ones(2))
