"""Inpainting, colorization, classifier-free and classifier guidance against exact conditionals."""

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.analytic import GaussianMixture, gaussian
from gl_jax.samplers.conditional import classifier_guided_score, colorize, guided_score, inpaint
from gl_jax.sde import VPSDE


def test_inpaint_keeps_observed_values_and_samples_the_conditional():
    # Two well separated modes: observing x_0 = 2 selects the mode at (2, 2), so x_1 ~ N(2, 0.3^2).
    gmm = GaussianMixture(np.array([0.5, 0.5]), np.array([[-2.0, -2.0], [2.0, 2.0]]), np.array([0.3, 0.3]))
    sde = VPSDE()
    n = 2000
    known = jnp.concatenate([jnp.full((n, 1), 2.0), jnp.full((n, 1), 123.0)], axis=1)
    mask = jnp.array([1.0, 0.0])
    result = jax.jit(
        lambda k: inpaint(k, gmm.score_fn(sde), sde, known.shape, known=known, mask=mask, steps=500)
    )(jax.random.key(0))
    x = np.asarray(result.x)
    np.testing.assert_array_equal(x[:, 0], 2.0)
    assert abs(x[:, 1].mean() - 2.0) < 0.05 and abs(x[:, 1].std() - 0.3) < 0.05
    assert int(result.nfe) == 1000


def test_colorize_keeps_grey_and_finds_conditional_colour():
    mean, std = np.array([0.5, -0.2, 0.1]), np.array([0.3, 0.2, 0.4])
    rgb = gaussian(mean, std)
    sde = VPSDE()

    def image_score(x, t):  # [B, 1, 1, 3] images.
        return rgb.score_fn(sde)(x.reshape(-1, 3), t).reshape(x.shape)

    n = 2000
    gray = jnp.full((n, 1, 1, 1), 0.3)
    result = colorize(jax.random.key(1), image_score, sde, (n, 1, 1, 3), gray=gray, steps=500)
    x = np.asarray(result.x).reshape(n, 3)
    np.testing.assert_allclose(x.mean(-1), 0.3, atol=1e-5)
    # Exact conditional mean of a diagonal Gaussian given a^T x = g with a = (1, 1, 1) / 3.
    a, cov = np.full(3, 1 / 3), np.diag(std**2)
    cond_mean = mean + cov @ a / (a @ cov @ a) * (0.3 - a @ mean)
    np.testing.assert_allclose(x.mean(0), cond_mean, atol=0.03)


def test_classifier_free_guidance_weights():
    cond = jnp.array([0, 1, 1])

    def score_fn(x, t, c):
        return -x + (0.0 if c is None else 2.0 * c[:, None])

    x, t = jnp.ones((3, 2)), jnp.full((3,), 0.5)
    np.testing.assert_array_equal(guided_score(score_fn, cond, w=0.0)(x, t), score_fn(x, t, None))
    np.testing.assert_array_equal(guided_score(score_fn, cond, w=1.0)(x, t), score_fn(x, t, cond))
    guided = guided_score(score_fn, cond, w=3.0)(x, t)
    np.testing.assert_allclose(guided, score_fn(x, t, None) + 3.0 * 2.0 * cond[:, None] * jnp.ones((3, 2)))


def test_classifier_guidance_with_exact_classifier_gives_class_score():
    """For a mixture whose components are the classes, s + grad log p(y | x) is component y's score."""
    means = np.array([[-1.5, 0.0], [1.5, 0.5], [0.0, 2.0]])
    gmm = GaussianMixture(np.array([0.3, 0.3, 0.4]), means, np.array([0.4, 0.5, 0.3]))
    sde = VPSDE()

    def log_prob_fn(x, t):  # Exact posterior over components of the noised mixture.
        a, s = sde.alpha(t)[:, None, None], sde.sigma(t)[:, None, None]
        var = a**2 * jnp.asarray(gmm.stds)[None] ** 2 + s**2
        diff = x[:, None] - a * jnp.asarray(gmm.means)[None]
        logits = jnp.log(jnp.asarray(gmm.weights)) - 0.5 * jnp.sum(diff**2 / var + jnp.log(var), -1)
        return jax.nn.log_softmax(logits, -1)

    labels = jnp.array([0, 1, 2, 2])
    x = jax.random.normal(jax.random.key(0), (4, 2))
    t = jnp.array([0.1, 0.3, 0.5, 0.9])
    guided = classifier_guided_score(gmm.score_fn(sde), log_prob_fn, labels)(x, t)
    for i, y in enumerate(np.asarray(labels)):
        component = GaussianMixture(np.ones(1), means[y : y + 1], gmm.stds[y : y + 1])
        expected = component.score_fn(sde)(x[i : i + 1], t[i : i + 1])
        np.testing.assert_allclose(guided[i : i + 1], expected, rtol=1e-4, atol=1e-4)
