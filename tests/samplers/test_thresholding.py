"""Thresholding of the denoised estimate: static and dynamic against NumPy, no effect on an exact score of
data inside [-1, 1], and a smaller sample error for a score with the high-noise error of a learned one."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.analytic import GaussianMixture
from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.samplers import SAMPLERS, threshold_x0, thresholded_score
from gl_jax.sde import VPSDE, broadcast_to_data
from tests.samplers.test_euler_maruyama import sliced_w2

# Data inside [-1, 1]^4: four narrow modes at +-0.6.
BOX = GaussianMixture(
    np.full(4, 0.25),
    np.array([[0.6, 0.6, -0.6, 0.0], [-0.6, 0.6, 0.6, 0.3], [0.6, -0.6, 0.0, -0.6], [-0.6, -0.6, -0.3, 0.6]]),
    np.full(4, 0.05),
)


def _dpm_samples(score, sde, key, num, steps):
    """DPM-Solver++(2M) samples `[num, 4]` of `score`, compiled."""
    return np.asarray(
        jax.jit(lambda k: SAMPLERS["dpm_solver_pp"](k, score, sde, (num, 4), steps=steps).x)(key)
    )


def test_static_and_dynamic_match_numpy():
    x0 = np.random.default_rng(0).normal(size=(5, 3, 4, 2)).astype(np.float32) * np.array(
        [0.2, 1.0, 2.0, 3.0, 0.5]
    ).reshape(5, 1, 1, 1).astype(np.float32)
    np.testing.assert_array_equal(threshold_x0(jnp.asarray(x0), method="static"), np.clip(x0, -1, 1))
    for p in (0.9, 0.995):
        s = np.maximum(np.quantile(np.abs(x0).reshape(5, -1), p, axis=1), 1.0).reshape(5, 1, 1, 1)
        got = np.asarray(threshold_x0(jnp.asarray(x0), method="dynamic", percentile=p))
        np.testing.assert_allclose(got, np.clip(x0, -s, s) / s, rtol=1e-6, atol=1e-7)
    # Examples already inside [-1, 1] (s = 1) are unchanged; the others end inside it.
    got = np.asarray(threshold_x0(jnp.asarray(x0), method="dynamic"))
    np.testing.assert_array_equal(got[0], x0[0])
    assert np.abs(got).max() <= 1.0
    np.testing.assert_array_equal(threshold_x0(jnp.asarray(x0), method="none"), x0)
    with pytest.raises(ValueError, match="Unknown threshold 'clip'"):
        threshold_x0(jnp.asarray(x0), method="clip")


def test_thresholded_score_implies_the_thresholded_denoised_estimate():
    sde = VPSDE()
    key = jax.random.key(0)
    x = 3.0 * jax.random.normal(key, (6, 4))  # Far from typical: its denoised estimate is out of range.
    t = jnp.linspace(0.3, 1.0, 6)
    score = BOX.score_fn(sde)
    alpha, var = broadcast_to_data(sde.alpha(t), x), broadcast_to_data(sde.sigma(t), x) ** 2
    x0_of = lambda s: (x + var * s(x, t)) / alpha
    # A score error that sends the denoised estimate outside [-1, 1] at high noise.
    wrong = lambda x_, t_: score(x_, t_) + 0.05
    assert np.abs(np.asarray(x0_of(wrong))).max() > 2.0
    for method in ("static", "dynamic"):
        fixed = thresholded_score(wrong, sde, method=method)
        want = threshold_x0(x0_of(wrong), method=method)
        np.testing.assert_allclose(x0_of(fixed), want, rtol=1e-4, atol=1e-4)
    assert thresholded_score(wrong, sde, method="none") is wrong


def test_exact_score_of_data_in_range_is_unchanged():
    """E[x0 | x_t] of data in [-1, 1] lies in [-1, 1], so static thresholding leaves the exact score alone."""
    sde = VPSDE()
    score = BOX.score_fn(sde)
    fixed = thresholded_score(score, sde, method="static")
    key = jax.random.key(1)
    np.testing.assert_allclose(
        _dpm_samples(fixed, sde, key, 256, 20), _dpm_samples(score, sde, key, 256, 20), atol=2e-4
    )
    # Along the way too: the denoised estimates at x_t drawn from p_t are inside the range.
    x0 = BOX.sample(key, 256)
    for t in (0.05, 0.5, 1.0):
        tt = jnp.full((256,), t)
        mean, std = sde.marginal(x0, tt)
        x_t = mean + std * jax.random.normal(jax.random.fold_in(key, int(100 * t)), x0.shape)
        np.testing.assert_allclose(fixed(x_t, tt), score(x_t, tt), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_thresholding_repairs_a_score_that_fails_off_the_data(method):
    """A network is trained only on typical x_t; off them its error grows (here eps error 0.02 x^3). Through
    sigma / alpha ~ 150 at t ~ 1 that sends some trajectories off, where the error grows further: without
    thresholding 5-10% of the samples blow up (inf or outside [-1, 1]); with it none do and the samples are
    as close to the data as the exact score's."""
    sde = VPSDE()
    exact_eps = BOX.eps_fn(sde)
    exact = lambda x, t: -exact_eps(x, t) / sde.sigma(t)[:, None]
    wrong = lambda x, t: -(exact_eps(x, t) - 0.02 * x**3) / sde.sigma(t)[:, None]
    key = jax.random.key(2)
    data = np.asarray(BOX.sample(jax.random.key(3), 512))
    w2 = lambda x: sliced_w2(x, data, jax.random.key(4))
    broken = lambda x: np.mean(~np.all(np.isfinite(x) & (np.abs(x) < 1.05), axis=1))
    plain = _dpm_samples(wrong, sde, key, 512, 10)
    fixed = _dpm_samples(thresholded_score(wrong, sde, method=method), sde, key, 512, 10)
    assert broken(plain) > 0.05
    assert broken(fixed) == 0.0
    assert w2(fixed) < 1.1 * w2(_dpm_samples(exact, sde, key, 512, 10))


def test_family_threshold_option():
    from tests.families.test_diffusion import ExactNet

    sde = VPSDE()
    ddim_8 = functools.partial(SAMPLERS["ddim"], steps=8)
    fam = ScoreDiffusion(model=ExactNet(BOX, sde, "eps", "t"), sde=sde, data_shape=(4,), sampler=ddim_8)
    params = fam.init(jax.random.key(0))
    params = jax.tree.map(lambda p: p + 0.02, params)  # An eps bias: out-of-range estimates at t ~ 1.
    key = jax.random.key(1)
    static = ScoreDiffusion(**{**fam.__dict__, "threshold": "static"})
    want = SAMPLERS["ddim"](key, thresholded_score(fam.score_fn(params), sde), sde, (16, 4), steps=8).x
    np.testing.assert_allclose(static.sample(params, key, 16), want, atol=1e-5)
    got = fam.with_sampler(ddim_8, threshold="static").sample_counted(params, key, 16).x
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(fam.sample(params, key, 16), want, atol=1e-3)
    with pytest.raises(ValueError, match="Unknown threshold 'clip'"):
        ScoreDiffusion(**{**fam.__dict__, "threshold": "clip"})


def test_config_threshold_reaches_the_family_and_is_refused_for_vectors(data_dir):
    from gl_jax.data import open_dataset
    from gl_jax.families.build import build_score
    from tests.conftest import load_config

    config = load_config("digits_vp", "smoke")
    config.sample.threshold = "static"
    spec, _ = open_dataset(config.data.name, data_dir=data_dir)
    assert build_score(config, spec).threshold == "static"
    config = load_config("toy_vp", "smoke")
    config.sample.threshold = "static"
    spec, _ = open_dataset(config.data.name, data_dir=data_dir)
    with pytest.raises(ValueError, match=r"not images, so set config.sample.threshold='none'"):
        build_score(config, spec)
