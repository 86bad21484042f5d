"""VAE objectives: the Gaussian KL against quadrature, decoder likelihoods against direct formulas and
normalisation, the IWAE bound's inequalities."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from scipy.special import expit

from gl_jax.losses.vae import (
    bernoulli_log_prob,
    discretized_logistic_log_prob,
    elbo,
    gaussian_kl,
    gaussian_log_prob,
    iwae_bound,
    standard_normal_log_prob,
)


def test_gaussian_kl_matches_its_closed_form_and_quadrature():
    mean = jnp.array([[0.0, 1.5, -0.3]])
    log_var = jnp.array([[0.0, -1.0, 0.7]])
    closed = 0.5 * np.sum(np.asarray(mean) ** 2 + np.exp(log_var) - 1 - np.asarray(log_var))
    np.testing.assert_allclose(gaussian_kl(mean, log_var), [closed], rtol=1e-6)
    # Each dimension by quadrature: int q log(q / p).
    grid = np.linspace(-12, 12, 200_001)
    total = 0.0
    for m, lv in zip(np.asarray(mean[0]), np.asarray(log_var[0]), strict=True):
        q = stats.norm.pdf(grid, m, math.exp(0.5 * lv))
        total += np.trapezoid(
            q * (stats.norm.logpdf(grid, m, math.exp(0.5 * lv)) - stats.norm.logpdf(grid)), grid
        )
    np.testing.assert_allclose(float(gaussian_kl(mean, log_var)[0]), total, rtol=1e-5)
    assert float(gaussian_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0


def test_gaussian_likelihoods_match_scipy():
    x, mean, log_scale = np.random.default_rng(0).normal(size=(3, 2, 5)).astype(np.float32)
    expected = stats.norm.logpdf(x, mean, np.exp(log_scale)).sum(-1)
    np.testing.assert_allclose(gaussian_log_prob(x, mean, log_scale), expected, rtol=1e-5)
    np.testing.assert_allclose(standard_normal_log_prob(x), stats.norm.logpdf(x).sum(-1), rtol=1e-5)


def test_discretized_logistic_is_a_distribution_over_the_levels():
    levels = 17
    k = jnp.arange(levels)[:, None]  # [L, 1]: every value as its own "example" of one dimension.
    log_prob = jax.jit(functools.partial(discretized_logistic_log_prob, levels=levels))
    rng = np.random.default_rng(0)
    for mixtures, log_scale in ((1, -3.0), (1, 0.5), (3, -6.0), (3, -1.0)):
        logits = jnp.asarray(rng.normal(size=(1, 1, mixtures)), jnp.float32)
        means = jnp.asarray(rng.uniform(-1.2, 1.2, size=(1, 1, mixtures)), jnp.float32)
        scales = jnp.full((1, 1, mixtures), log_scale)
        tile = lambda a, m=mixtures: jnp.broadcast_to(a, (levels, 1, m))
        log_p = log_prob(k, tile(logits), tile(means), tile(scales))
        np.testing.assert_allclose(float(jnp.sum(jnp.exp(log_p))), 1.0, rtol=1e-5)
        # Against the difference of logistic CDFs in float64, taken on the side of the mean where it does
        # not cancel (1 - cdf for bins above the mean).
        c = 2 * np.arange(levels) / (levels - 1) - 1
        h = 1 / (levels - 1)
        mu, s = np.asarray(means[0, 0]), math.exp(log_scale)
        a, b = (c[:, None] + h - mu) / s, (c[:, None] - h - mu) / s  # [L, M]
        a[-1], b[0] = np.inf, -np.inf  # The edge bins reach to +-inf.
        above = b > 0
        bins = np.where(above, expit(-b) - expit(-a), expit(a) - expit(b))
        weights = np.asarray(jax.nn.softmax(logits[0, 0]))
        direct = np.log(np.sum(weights * bins, axis=1))
        np.testing.assert_allclose(np.asarray(log_p), direct, rtol=1e-4, atol=1e-5)


def test_discretized_logistic_is_finite_far_from_the_mean():
    k = jnp.array([[0, 5, 16]])
    out = discretized_logistic_log_prob(
        k, jnp.zeros((1, 3, 1)), jnp.full((1, 3, 1), 1.0), jnp.full((1, 3, 1), -7.0), levels=17
    )
    assert np.isfinite(float(out[0]))


def test_bernoulli_and_elbo():
    logits = jnp.array([[2.0, -1.0, 0.0]])
    b = jnp.array([[1, 0, 1]])
    expected = np.log(1 / (1 + np.exp(-2.0))) + np.log(1 - 1 / (1 + np.exp(1.0))) + np.log(0.5)
    np.testing.assert_allclose(bernoulli_log_prob(b, logits), [expected], rtol=1e-6)
    np.testing.assert_allclose(elbo(jnp.array([-3.0]), jnp.array([2.0]), kl_weight=0.5), [-4.0])


def test_iwae_bound_lies_between_the_mean_and_the_max_log_weight():
    log_w = jax.random.normal(jax.random.key(0), (10, 7)) * 3.0  # [K, B]
    bound = iwae_bound(log_w)
    assert np.all(bound >= jnp.mean(log_w, axis=0)) and np.all(bound <= jnp.max(log_w, axis=0))
    np.testing.assert_allclose(iwae_bound(jnp.full((5, 2), -4.0)), [-4.0, -4.0], rtol=1e-6)
