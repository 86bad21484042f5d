"""Guidance in a limited interval and autoguidance: against plain CFG, exact mixtures and counted calls."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.analytic import GaussianMixture, gaussian
from gl_jax.parametrization import convert
from gl_jax.samplers.base import time_grid
from gl_jax.samplers.conditional import guided_score
from gl_jax.samplers.edm import edm_sampler
from gl_jax.samplers.euler_maruyama import euler_maruyama
from gl_jax.samplers.guidance import (
    autoguided_score,
    evaluation_times,
    interval_guided_score,
    noise_level,
)
from gl_jax.sde import EDMSDE, VPSDE, RectifiedFlow

# Two classes in 2-D with equal isotropic spread: class c ~ N(MEANS[c], STD^2 I), p(c) = WEIGHTS[c].
MEANS = np.array([[-1.0, 0.5], [1.5, -0.5]])
STD = 0.4
WEIGHTS = np.array([0.3, 0.7])
CLASSES = [gaussian(m, STD) for m in MEANS]
MIXTURE = GaussianMixture(WEIGHTS, MEANS, np.full(2, STD))
NULL = 2  # The dropped label.


def class_score(sde):
    """`score(x, t, c)`: the exact class-conditional score, the mixture's for c = NULL (a [B] label array)."""
    scores = [g.score_fn(sde) for g in CLASSES] + [MIXTURE.score_fn(sde)]

    def score(x, t, c):
        return jnp.select([(c == k)[:, None] for k in range(3)], [s(x, t) for s in scores])

    return score


def test_interval_covering_every_level_is_plain_cfg_bitwise():
    sde = VPSDE()
    labels = jnp.array([0, 1, 1, 0, 1, 0, 1, 1])
    null = jnp.full_like(labels, NULL)
    score = class_score(sde)
    plain = guided_score(score, labels, w=2.5, null_cond=null)
    limited = interval_guided_score(score, labels, sde, w=2.5, interval=(0.0, float("inf")), null_cond=null)
    sampler = functools.partial(euler_maruyama, steps=20)
    run = jax.jit(lambda k, s: sampler(k, s, sde, (8, 2)), static_argnums=1)
    a, b = run(jax.random.key(0), plain), run(jax.random.key(0), limited)
    np.testing.assert_array_equal(a.x, b.x)
    assert int(a.nfe) == int(b.nfe) == 20


def test_autoguidance_by_the_model_itself_is_the_unguided_sampler():
    # s_g + w (s_m - s_g) with s_m = s_g is s_g in exact arithmetic. Compiled, the two programs differ
    # (XLA:CPU fuses the score with the sampler's update differently and contracts other multiply-adds),
    # so the samples agree to float32 rounding of a few steps, not to the bit.
    sde = EDMSDE()
    s = MIXTURE.score_fn(sde)
    sampler = functools.partial(edm_sampler, steps=8)
    run = jax.jit(lambda k, f: sampler(k, f, sde, (16, 2)), static_argnums=1)
    unguided = run(jax.random.key(1), s)
    for interval in (None, (0.1, 5.0)):
        guided = run(jax.random.key(1), autoguided_score(s, s, sde, w=2.2, interval=interval))
        np.testing.assert_allclose(unguided.x, guided.x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sde", [VPSDE(), RectifiedFlow(), EDMSDE()], ids=["vp", "rf", "edm"])
def test_interval_is_open_below_closed_above_in_noise_to_signal_ratio(sde):
    lo, hi = 0.3, 2.0
    levels = np.array([0.2, 0.29, 0.31, 1.0, 1.99, 2.01, 4.0])
    t = sde.t_from_log_snr(jnp.asarray(-2.0 * np.log(levels), jnp.float32))  # [7], the times of the levels.
    np.testing.assert_allclose(noise_level(sde, t), levels, rtol=1e-3)
    guided = interval_guided_score(class_score(sde), None, sde, w=3.0, interval=(lo, hi))
    np.testing.assert_array_equal(guided.guided_at(t), [False, False, True, True, True, False, False])
    # The ends themselves, exactly representable as EDM times (sigma(t) = t, alpha = 1).
    edm = interval_guided_score(class_score(EDMSDE()), None, EDMSDE(), w=3.0, interval=(lo, hi))
    np.testing.assert_array_equal(edm.guided_at(jnp.array([lo, hi], jnp.float32)), [False, True])


def test_per_example_times_straddling_the_interval_select_per_example():
    sde = VPSDE()
    score = class_score(sde)
    labels = jnp.array([1, 0, 1, 0])
    null = jnp.full_like(labels, NULL)
    t = sde.t_from_log_snr(-2.0 * jnp.log(jnp.array([0.1, 0.5, 1.5, 9.0])))  # Levels out, in, in, out.
    x = jax.random.normal(jax.random.key(2), (4, 2))
    limited = interval_guided_score(score, labels, sde, w=4.0, interval=(0.2, 3.0), null_cond=null)
    out = jax.jit(limited)(x, t)
    full = guided_score(score, labels, w=4.0, null_cond=null)(x, t)
    cond = score(x, t, labels)
    np.testing.assert_allclose(out[1:3], full[1:3], rtol=1e-6)
    outside = jnp.array([0, 3])  # Jitted vs not: the same score up to rounding.
    np.testing.assert_allclose(out[outside], cond[outside], rtol=1e-6)


def test_two_class_mixture_guided_score_closed_form():
    """CFG of exact scores is the score of p_t(x | c) p_t(c | x)^(w - 1) (Ho & Salimans 2022, sec. 3.2).

    With equal covariances v = alpha^2 STD^2 + sigma^2, p_t(1 | x) = sigmoid(a . x + b) with
    a = alpha (mu_1 - mu_0) / v, so s_w = s_c + (w - 1) (1[c = 1] - p_t(1 | x)) a; in the interval only.
    """
    sde = VPSDE()
    w, interval = 3.0, (0.25, 2.5)
    labels = jnp.array([0, 1, 1, 0, 1, 1])
    null = jnp.full_like(labels, NULL)
    t = jnp.array([0.05, 0.1, 0.3, 0.5, 0.7, 0.95])
    x = 1.5 * jax.random.normal(jax.random.key(3), (6, 2))
    out = np.asarray(
        interval_guided_score(class_score(sde), labels, sde, w=w, interval=interval, null_cond=null)(x, t)
    )

    xs, ts, cs = np.asarray(x, np.float64), np.asarray(t, np.float64), np.asarray(labels)
    alpha, sigma = np.asarray(sde.alpha(t), np.float64), np.asarray(sde.sigma(t), np.float64)
    v = alpha**2 * STD**2 + sigma**2  # [6]
    a = alpha[:, None] * (MEANS[1] - MEANS[0]) / v[:, None]  # [6, 2]
    b = np.log(WEIGHTS[1] / WEIGHTS[0]) - alpha**2 * (MEANS[1] @ MEANS[1] - MEANS[0] @ MEANS[0]) / (2 * v)
    p1 = 1.0 / (1.0 + np.exp(-(np.sum(a * xs, -1) + b)))  # [6]
    s_c = -(xs - alpha[:, None] * MEANS[cs]) / v[:, None]
    s_w = s_c + (w - 1.0) * ((cs == 1) - p1)[:, None] * a
    inside = (sigma / alpha > interval[0]) & (sigma / alpha <= interval[1])
    assert inside.any() and not inside.all(), ts
    expected = np.where(inside[:, None], s_w, s_c)
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-4)


def test_autoguidance_in_scores_equals_it_in_denoisers_and_the_gaussian_closed_form():
    sde = VPSDE()
    mean, std_main, std_guide, w = np.array([0.5, -1.0]), 0.3, 0.8, 2.0
    main, guide = gaussian(mean, std_main), gaussian(mean, std_guide)
    t = jnp.array([0.02, 0.2, 0.5, 0.9])
    x = jax.random.normal(jax.random.key(4), (4, 2))
    out = autoguided_score(main.score_fn(sde), guide.score_fn(sde), sde, w=w)(x, t)

    alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    d_w = guide.denoiser_fn(sde)(x, t) + w * (main.denoiser_fn(sde)(x, t) - guide.denoiser_fn(sde)(x, t))
    from_denoiser = convert(d_w, source="x0", target="score", x_t=x, alpha=alpha, sigma=sigma)
    np.testing.assert_allclose(out, from_denoiser, rtol=1e-5, atol=1e-5)
    # Both Gaussian scores are -(x - alpha mean) / v: the guided one has precision (1 - w) / v_g + w / v_m.
    v_m, v_g = alpha**2 * std_main**2 + sigma**2, alpha**2 * std_guide**2 + sigma**2
    np.testing.assert_allclose(out, -(x - alpha * mean) * ((1 - w) / v_g + w / v_m), rtol=1e-5)


def counted_network(sde, counter):
    """The exact class scores as `score(x, t, c)`, each call adding 1 to `counter["n"]` on the host."""
    score = class_score(sde)

    def add():
        counter["n"] += 1

    def network(x, t, c):
        jax.debug.callback(add)
        return score(x, t, c)

    return network


@pytest.mark.parametrize(
    "sampler", [functools.partial(euler_maruyama, steps=12), functools.partial(edm_sampler, steps=7)]
)
def test_network_evaluations_counted_honestly(sampler):
    sde = VPSDE()
    interval = (0.4, 3.0)
    labels = jnp.array([1])
    null = jnp.full_like(labels, NULL)
    counter = {"n": 0}
    network = counted_network(sde, counter)
    guided = interval_guided_score(network, labels, sde, w=2.0, interval=interval, null_cond=null)
    times = evaluation_times(sampler, sde, (1, 2))
    predicted = int(guided.evaluations(times))
    levels = np.asarray(noise_level(sde, jnp.asarray(times)))
    inside = int(np.sum((levels > interval[0]) & (levels <= interval[1])))
    assert 0 < inside < len(times) and predicted == len(times) + inside

    # Brute force 1: un-jitted, so `lax.cond` runs the chosen branch in Python and every call is seen.
    with jax.disable_jit():
        result = sampler(jax.random.key(5), guided, sde, (1, 2))
    assert int(result.nfe) == len(times)
    assert counter["n"] == predicted

    # Brute force 2: compiled, and vmapped over samples as the mesh sampler does (the time grid is not
    # batched, so the cond stays a cond): one sample's evaluations, not two per call.
    counter["n"] = 0

    def one(key, label):
        g = interval_guided_score(network, label[None], sde, w=2.0, interval=interval, null_cond=null)
        return sampler(key, g, sde, (1, 2)).x

    keys = jax.random.split(jax.random.key(6), 3)
    jax.block_until_ready(jax.jit(jax.vmap(one))(keys, jnp.array([0, 1, 1])))
    jax.effects_barrier()
    assert counter["n"] == predicted


def test_evaluation_times_of_euler_maruyama_are_its_grid_and_counts_by_hand():
    sde = VPSDE()
    steps = 30
    times = evaluation_times(functools.partial(euler_maruyama, steps=steps), sde, (4, 2))
    grid = np.asarray(time_grid(sde, steps))
    np.testing.assert_allclose(times, grid[:-1], rtol=1e-6)  # One call at the start of each interval.
    lo, hi = 0.5, 2.0
    guided = interval_guided_score(class_score(sde), None, sde, w=2.0, interval=(lo, hi))
    level = np.sqrt(1.0 - np.asarray(sde.alpha(grid[:-1])) ** 2) / np.asarray(sde.alpha(grid[:-1]))
    by_hand = sum(2 if lo < s <= hi else 1 for s in level)
    assert int(jax.jit(guided.evaluations)(times)) == by_hand
    # No interval: two per call; w = 1: the conditional model alone, one per call.
    assert (
        int(interval_guided_score(class_score(sde), None, sde, w=2.0, interval=None).evaluations(times)) == 60
    )
    assert (
        int(interval_guided_score(class_score(sde), None, sde, w=1.0, interval=(lo, hi)).evaluations(times))
        == 30
    )


def test_weight_one_evaluates_the_main_model_only():
    sde = VPSDE()
    counter = {"n": 0}
    network = counted_network(sde, counter)
    labels = jnp.array([0, 1])
    guided = interval_guided_score(
        network, labels, sde, w=1.0, interval=None, null_cond=jnp.full_like(labels, 2)
    )
    x, t = jnp.ones((2, 2)), jnp.full((2,), 0.5)
    np.testing.assert_array_equal(guided(x, t), class_score(sde)(x, t, labels))
    jax.effects_barrier()
    assert counter["n"] == 1


def test_bad_interval_is_refused():
    with pytest.raises(ValueError, match="sigma_lo < sigma_hi"):
        interval_guided_score(class_score(VPSDE()), None, VPSDE(), w=2.0, interval=(2.0, 1.0))
