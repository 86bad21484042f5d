"""Counterfactual edits with an exact class-conditional mixture (one Gaussian per class) and its exact
posterior p(class | x) as the classifier."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.analytic import GaussianMixture
from gl_jax.samplers.edit import counterfactual
from gl_jax.sde import VPSDE

SDE = VPSDE()
K, D, N = 3, 8, 64
_rng = np.random.default_rng(0)
MEANS = 2.0 * _rng.standard_normal((K, D))  # [K, D]: classes about 5 apart.
STDS = _rng.uniform(0.3, 0.6, (K, D))
WEIGHTS = np.full(K, 1.0 / K)
MIXTURE = GaussianMixture(WEIGHTS, MEANS, STDS)
CLASS_SCORES = [
    GaussianMixture(np.ones(1), MEANS[k : k + 1], STDS[k : k + 1]).score_fn(SDE) for k in range(K)
]


def conditional_score(x, t, labels):
    """The exact score of class `labels[b]`'s component for each example."""
    per_class = jnp.stack([s(x, t) for s in CLASS_SCORES])  # [K, B, D]
    return per_class[labels, jnp.arange(x.shape[0])]


def posterior(x):
    """log p(class | x) `[B, K]` by Bayes' rule with the components."""
    var = jnp.asarray(STDS) ** 2  # [K, D]
    diff = x[:, None, :] - jnp.asarray(MEANS)[None]  # [B, K, D]
    log_joint = jnp.log(jnp.asarray(WEIGHTS)) - 0.5 * jnp.sum(diff**2 / var + jnp.log(2 * jnp.pi * var), -1)
    return jax.nn.log_softmax(log_joint, axis=-1)


def _class_samples(k, seed):
    rng = np.random.default_rng(seed)
    return jnp.asarray(MEANS[k] + STDS[k] * rng.standard_normal((N, D)), jnp.float32)  # [N, D]


def test_edit_to_another_class_lands_on_its_component():
    x = _class_samples(0, seed=1)
    source, target = jnp.zeros(N, jnp.int32), jnp.ones(N, jnp.int32)
    result = jax.jit(
        lambda x: counterfactual(
            conditional_score, SDE, x, labels_from=source, labels_to=target, steps=50, classifier=posterior
        )
    )(x)
    to_target = np.linalg.norm(np.asarray(result.x) - MEANS[1], axis=1)
    to_source = np.linalg.norm(np.asarray(result.x) - MEANS[0], axis=1)
    assert np.all(to_target < to_source)
    assert np.mean(np.argmax(result.before, -1) == 0) == 1.0  # The verdict before: the source class.
    assert np.mean(np.argmax(result.after, -1) == 1) >= 0.95  # After: the target class.
    assert int(result.nfe) == 100
    # What the latent holds of x is kept: the edit is x's whitened position moved to the other component.
    expected = MEANS[1] + STDS[1] / STDS[0] * (np.asarray(x) - MEANS[0])
    assert np.median(np.linalg.norm(np.asarray(result.x) - expected, axis=1)) < 0.3


@pytest.mark.parametrize("method, tolerance", [("ddim", 0.25), ("heun", 1e-3)])
def test_edit_under_the_same_class_reconstructs(method, tolerance):
    x = _class_samples(2, seed=2)
    labels = jnp.full(N, 2)
    result = counterfactual(
        conditional_score, SDE, x, labels_from=labels, labels_to=labels, steps=50, method=method
    )
    assert np.median(np.linalg.norm(np.asarray(result.x - x), axis=1)) < tolerance
    assert result.before is None and result.after is None


def test_sdedit_keeps_less_of_the_image_the_later_it_starts():
    x = _class_samples(0, seed=3)
    unconditional = MIXTURE.score_fn(SDE)
    distances, kept = [], []
    for t_start in (0.1, 0.4, 1.0):
        result = counterfactual(
            unconditional, SDE, x, steps=50, t_start=t_start, key=jax.random.key(4), classifier=posterior
        )
        assert int(result.nfe) == 50
        distances.append(float(np.mean(np.linalg.norm(np.asarray(result.x - x), axis=1))))
        kept.append(float(np.mean(np.argmax(result.after, -1) == 0)))
    assert distances[0] < distances[1] < distances[2]
    assert kept[0] >= 0.95  # A light touch keeps the class...
    assert kept[2] < 0.7  # ...from T the sample is fresh: about 1/3 of them of class 0.

    # Under a class label, SDEdit from a middle time turns the image into that class.
    result = counterfactual(
        conditional_score,
        SDE,
        x,
        labels_to=jnp.ones(N, jnp.int32),
        steps=50,
        t_start=0.5,
        key=jax.random.key(5),
        classifier=posterior,
    )
    assert np.mean(np.argmax(result.after, -1) == 1) >= 0.95
    with pytest.raises(ValueError, match="key"):
        counterfactual(unconditional, SDE, x, steps=5, t_start=0.5)
