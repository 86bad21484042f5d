"""Denoising score matching against Gaussian data, whose noised marginals have exact scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gl_jax.analytic import gaussian
from gl_jax.losses.score import (
    TIME_SAMPLINGS,
    WEIGHTINGS,
    DiscreteTimes,
    LikelihoodWeighting,
    LogNormalTimes,
    LogSNRTimes,
    UniformTimes,
    denoising_score_matching,
)
from gl_jax.parametrization import convert
from gl_jax.sde import EDMSDE, VESDE, VPSDE, DiscreteDDPM

MU, S = 0.7, 0.4  # Data ~ N(MU, S^2 I).
D = 4
DATA = gaussian(np.full(D, MU), S)


def exact_model(sde, prediction="score", scale=1.0, shift=0.0):
    """The exact score (optionally perturbed: scale * s + shift), expressed as `prediction`."""
    score = DATA.score_fn(sde)

    def model(x, t):
        s = scale * score(x, t) + shift
        alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        return convert(s, source="score", target=prediction, x_t=x, alpha=alpha, sigma=sigma)

    return model


def data(n, seed=0):
    return DATA.sample(jax.random.key(seed), n)


# Jitted: op-by-op dispatch of the mixture's score costs tens of seconds on CPU.
_jit_dsm = jax.jit(denoising_score_matching, static_argnums=(1, 2), static_argnames=("reduce",))


def test_loss_with_exact_score_equals_closed_form():
    """E || sigma s* + eps ||^2 / D = E_t[alpha^2 S^2 / (alpha^2 S^2 + sigma^2)].

    With x_t - alpha MU = alpha S z + sigma eps and v = alpha^2 S^2 + sigma^2, the residual
    sigma s* + eps = eps (1 - sigma^2 / v) - sigma alpha S z / v has per-dimension variance alpha^2 S^2 / v.
    """
    sde = VPSDE()
    loss, _ = _jit_dsm(jax.random.key(1), exact_model(sde), sde, data(200_000))
    t = jnp.linspace(sde.t_min, sde.T, 20_001)
    a2 = sde.alpha(t) ** 2
    expected = float(jnp.mean(a2 * S**2 / (a2 * S**2 + sde.sigma(t) ** 2)))
    assert abs(float(loss) - expected) < 0.01 * expected + 1e-3


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "edm"])
@pytest.mark.parametrize("prediction", ["score", "eps", "x0", "v"])
def test_exact_score_is_the_minimiser(weighting, prediction):
    """The gradient wrt a perturbation of the exact score vanishes there (in expectation), not elsewhere."""
    sde = VPSDE()
    x0 = data(50_000, seed=2)
    keys = jax.random.split(jax.random.key(3), x0.shape[0])

    def loss_at(params, keys, x0):
        scale, shift = params
        model = exact_model(sde, prediction, 1.0 + scale, shift)
        return denoising_score_matching(
            keys, model, sde, x0, weighting=WEIGHTINGS[weighting](), prediction=prediction
        )[0]

    per_example = jax.jit(jax.vmap(jax.grad(loss_at), in_axes=(None, 0, 0)))
    g = np.asarray(jnp.stack(per_example((0.0, 0.0), keys[:, None], x0[:, None]), -1))  # [N, 2]
    mean, se = g.mean(0), g.std(0) / np.sqrt(len(g))
    assert np.all(np.abs(mean) < 3.5 * se), (mean, se)
    g_off = np.asarray(jnp.stack(per_example((0.3, 0.2), keys[:, None], x0[:, None]), -1)).mean(0)
    assert np.all(np.abs(g_off) > 10 * se), (g_off, se)


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "edm"])
def test_prediction_kind_does_not_change_the_objective(weighting):
    sde, x0 = VPSDE(), data(512)
    keys = jax.random.split(jax.random.key(4), 512)
    losses = [
        float(
            denoising_score_matching(
                keys, exact_model(sde, p, 1.1, 0.05), sde, x0, weighting=WEIGHTINGS[weighting](), prediction=p
            )[0]
        )
        for p in ("score", "eps", "x0", "v")
    ]
    np.testing.assert_allclose(losses, losses[0], rtol=2e-3)


def test_log_snr_sampling_is_unbiased_importance_sampling_for_likelihood_weighting():
    """Same expectation as uniform t, far lower variance (the weighted integrand becomes flat in t)."""
    sde, x0 = VPSDE(), data(100_000, seed=5)
    model = exact_model(sde, "score", 1.2, 0.1)

    def per_example(time_sampling, seed):
        keys = jax.random.split(jax.random.key(seed), x0.shape[0])
        f = lambda k, x: denoising_score_matching(
            k[None], model, sde, x[None], weighting=LikelihoodWeighting(), time_sampling=time_sampling
        )[0]
        return np.asarray(jax.jit(jax.vmap(f))(keys, x0))

    uniform, importance = per_example(UniformTimes(), 6), per_example(LogSNRTimes(), 7)
    se = np.hypot(uniform.std(), importance.std()) / np.sqrt(len(x0))
    assert abs(uniform.mean() - importance.mean()) < 3.5 * se, (uniform.mean(), importance.mean(), se)
    assert importance.std() < 0.5 * uniform.std()


def test_time_sampling_distributions():
    keys = jax.random.split(jax.random.key(0), 20_000)
    ddpm = DiscreteDDPM()
    t, w = jax.vmap(lambda k: DiscreteTimes()(k, ddpm))(keys)
    n = np.asarray(t) * 1000
    np.testing.assert_allclose(n, np.round(n), atol=1e-3)
    assert n.min() >= 1 and n.max() <= 1000 and np.all(np.asarray(w) == 1)
    edm = EDMSDE()
    t, _ = jax.vmap(lambda k: LogNormalTimes()(k, edm))(keys)
    log_sigma = np.log(np.asarray(t))
    # Clipping to [0.002, 80] touches only > 4 standard deviations out: the log-normal is untouched.
    assert stats.kstest((log_sigma + 1.2) / 1.2, "norm").pvalue > 1e-3
    np.testing.assert_allclose([log_sigma.mean(), log_sigma.std()], [-1.2, 1.2], atol=0.05)
    ve = VESDE()
    t, _ = jax.vmap(lambda k: DiscreteTimes()(k, ve))(keys)
    levels = np.log(np.asarray(ve.sigma(t)) / ve.sigma_min) / np.log(ve.sigma_max / ve.sigma_min) * 999
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-2)  # NCSN's 1000 geometric levels.
    assert len(np.unique(np.round(levels))) > 990
    with pytest.raises(ValueError, match="discrete levels"):
        DiscreteTimes()(keys[0], VPSDE())


def test_per_example_keys_make_loss_independent_of_batch_split():
    sde = VPSDE()
    model = exact_model(sde)
    x0 = data(64)
    keys = jax.random.split(jax.random.key(4), 64)
    whole = _jit_dsm(keys, model, sde, x0)[0]
    halves = [_jit_dsm(keys[i : i + 32], model, sde, x0[i : i + 32])[0] for i in (0, 32)]
    np.testing.assert_allclose(whole, np.mean(halves), rtol=1e-6)


def test_reduce_sum_scales_by_dimension():
    sde = VPSDE()
    model = exact_model(sde)
    mean_loss = _jit_dsm(jax.random.key(0), model, sde, data(256))[0]
    sum_loss = _jit_dsm(jax.random.key(0), model, sde, data(256), reduce="sum")[0]
    np.testing.assert_allclose(sum_loss, D * mean_loss, rtol=1e-5)


def test_bad_options_are_named():
    sde = VPSDE()
    with pytest.raises(ValueError, match="weighting"):
        WEIGHTINGS["nope"]
    with pytest.raises(ValueError, match="prediction"):
        denoising_score_matching(jax.random.key(0), exact_model(sde), sde, data(8), prediction="noise")
    with pytest.raises(ValueError, match="time_sampling"):
        TIME_SAMPLINGS["beta"]
    assert TIME_SAMPLINGS.build("edm", {"p_std": 2.0}, where="config.loss") == LogNormalTimes(p_std=2.0)
    with pytest.raises(ValueError, match="per-example keys"):
        denoising_score_matching(jax.random.split(jax.random.key(0), 3), exact_model(sde), sde, data(8))
