"""Every forward process against its closed forms and against the generic (autodiff) derivations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gl_jax.models.schedule import MonotoneGamma
from gl_jax.sde import (
    EDMSDE,
    VESDE,
    VPSDE,
    DiscreteDDPM,
    GaussianDiffusion,
    LearnedSchedule,
    RectifiedFlow,
    SubVPSDE,
)


class _Generic(GaussianDiffusion):
    """Only alpha and sigma of another process: everything else comes from the base class."""

    def __init__(self, sde):
        self._sde = sde
        self.T, self.t_min = sde.T, sde.t_min

    def alpha(self, t):
        return self._sde.alpha(t)

    def sigma(self, t):
        return self._sde.sigma(t)


def _vp_integral(t, b0=0.1, b1=20.0):
    return b0 * t + 0.5 * t**2 * (b1 - b0)  # int_0^t beta(s) ds


# name -> (process, closed-form alpha(t), sigma(t), g^2(t)) in float64 NumPy.
CLOSED_FORMS = {
    "vp": (
        VPSDE(),
        lambda t: np.exp(-0.5 * _vp_integral(t)),
        lambda t: np.sqrt(1 - np.exp(-_vp_integral(t))),
        lambda t: 0.1 + t * 19.9,
    ),
    "subvp": (
        SubVPSDE(),
        lambda t: np.exp(-0.5 * _vp_integral(t)),
        lambda t: 1 - np.exp(-_vp_integral(t)),
        lambda t: (0.1 + t * 19.9) * (1 - np.exp(-2 * _vp_integral(t))),
    ),
    "ve": (
        VESDE(),
        lambda t: np.ones_like(t),
        lambda t: 0.01 * 5000.0**t,
        lambda t: 2 * (0.01 * 5000.0**t) ** 2 * np.log(5000.0),
    ),
    "edm": (EDMSDE(), lambda t: np.ones_like(t), lambda t: t, lambda t: 2 * t),
    "rectified_flow": (RectifiedFlow(), lambda t: 1 - t, lambda t: t, lambda t: 2 * t / (1 - t)),
}


def _times(sde, n=29):
    return jnp.linspace(sde.t_min, sde.T, n)


@pytest.mark.parametrize("name", CLOSED_FORMS)
def test_alpha_sigma_and_diffusion_closed_forms(name):
    sde, alpha, sigma, g2 = CLOSED_FORMS[name]
    t = _times(sde)
    tn = np.asarray(t, np.float64)
    np.testing.assert_allclose(sde.alpha(t), alpha(tn), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(sde.sigma(t), sigma(tn), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(sde.g2(t), g2(tn), rtol=1e-4, atol=1e-7)
    x = jax.random.normal(jax.random.key(0), (t.shape[0], 3))
    drift, diffusion = sde.drift_diffusion(x, t)
    np.testing.assert_allclose(drift, sde.f(t)[:, None] * x, rtol=1e-6)
    np.testing.assert_allclose(diffusion, jnp.sqrt(sde.g2(t)), rtol=1e-6)
    mean, std = sde.marginal(x, t)
    np.testing.assert_allclose(mean, alpha(tn)[:, None] * np.asarray(x), rtol=2e-5, atol=1e-6)
    assert std.shape == (t.shape[0], 1)


@pytest.mark.parametrize("name", CLOSED_FORMS)
def test_closed_form_f_and_g2_match_generic_derivation(name):
    sde = CLOSED_FORMS[name][0]
    t = _times(sde)[1:-1]  # Interior points: one-sided ends make forward-mode derivatives no easier.
    generic = _Generic(sde)
    np.testing.assert_allclose(generic.f(t), sde.f(t), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(generic.g2(t), sde.g2(t), rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("name", [*CLOSED_FORMS, "ddpm_linear", "ddpm_cosine"])
def test_log_snr_closed_form_and_inverse_roundtrip(name):
    sde = CLOSED_FORMS[name][0] if name in CLOSED_FORMS else DiscreteDDPM(schedule=name.split("_")[1])
    t = _times(sde, 17)
    lam = sde.log_snr(t)
    alpha, sigma = (np.asarray(v, np.float64) for v in (sde.alpha(t), sde.sigma(t)))
    expected = 2 * (np.log(alpha) - np.log(sigma))
    np.testing.assert_allclose(lam, expected, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(np.asarray(lam)) < 0)  # Decreasing in t.
    np.testing.assert_allclose(sde.t_from_log_snr(lam), t, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(_Generic(sde).t_from_log_snr(lam), t, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_marginal_matches_forward_sde_simulation(name):
    """Euler-Maruyama on the forward SDE from a fixed x0 reproduces the closed-form mean and std."""
    sde = CLOSED_FORMS[name][0]
    n, steps, t_end = 20_000, 2000, 0.3
    x0 = jnp.full((n, 1), 1.5)
    dt = t_end / steps

    def body(i, x):
        t = jnp.full((n,), sde.t_min + i * dt)
        drift, g = sde.drift_diffusion(x, t)
        z = jax.random.normal(jax.random.fold_in(jax.random.key(1), i), x.shape)
        return x + drift * dt + g[:, None] * jnp.sqrt(dt) * z

    x = jax.jit(lambda x: jax.lax.fori_loop(0, steps, body, x))(x0 * sde.alpha(jnp.array([sde.t_min]))[0])
    # Start from the t_min marginal's mean; its std there is negligible for these processes.
    t = jnp.array([sde.t_min + t_end])
    mean, std = sde.marginal(x0[:1], t)
    assert abs(float(x.mean()) - float(mean[0, 0])) < 4 * float(std[0, 0]) / np.sqrt(n) + 3e-3
    assert abs(float(x.std()) - float(std[0, 0])) < 0.02 * float(std[0, 0])


@pytest.mark.parametrize("name", [*CLOSED_FORMS, "ddpm_linear"])
def test_prior_sample_and_logp(name):
    sde = CLOSED_FORMS[name][0] if name in CLOSED_FORMS else DiscreteDDPM()
    std = float(sde.prior_std())
    z = sde.prior_sample(jax.random.key(0), (4096, 3))
    assert z.shape == (4096, 3)
    assert stats.kstest(np.asarray(z).ravel() / std, "norm").pvalue > 1e-3
    expected = stats.multivariate_normal(np.zeros(3), std**2 * np.eye(3)).logpdf(np.asarray(z[:5]))
    np.testing.assert_allclose(sde.prior_logp(z[:5]), expected, rtol=1e-5)
    # The prior is (close to) the marginal at T: the signal is small against the noise there.
    t_end = jnp.array([sde.T])
    assert float(sde.alpha(t_end)[0] / sde.sigma(t_end)[0]) < 0.05
    np.testing.assert_allclose(float(sde.sigma(t_end)[0]), std, rtol=1e-2)


def test_ddpm_schedules():
    linear = DiscreteDDPM()
    betas = linear.betas()
    assert betas.shape == (1000,) and betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    t = linear.timesteps()
    np.testing.assert_allclose(linear.alpha(t) ** 2, linear.alphas_cumprod(), rtol=1e-4)
    # The VP SDE with beta in [0.1, 20] is the continuous limit of the linear schedule.
    tt = jnp.linspace(0.01, 1.0, 50)
    np.testing.assert_allclose(linear.alpha(tt), VPSDE().alpha(tt), atol=2e-3)
    cosine = DiscreteDDPM(schedule="cosine")
    n = np.arange(1, 1001) / 1000
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    expected = f(n) / f(0)
    # Clipping beta at 0.999 changes only the last few steps.
    np.testing.assert_allclose(cosine.alphas_cumprod()[:-5], expected[:-5], rtol=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        DiscreteDDPM(schedule="sqrt")


def test_learned_monotone_schedule():
    gamma = MonotoneGamma(gamma_min=-13.3, gamma_max=5.0, hidden=64)
    t = jnp.linspace(0.0, 1.0, 101)
    for seed in range(3):
        params = gamma.init(jax.random.key(seed), t)
        g = gamma.apply(params, t)
        assert np.all(np.diff(np.asarray(g)) > 0)
        np.testing.assert_allclose([g[0], g[-1]], [-13.3, 5.0], rtol=1e-5, atol=1e-5)
        sde = LearnedSchedule(gamma=lambda t, p=params: gamma.apply(p, t))
        np.testing.assert_allclose(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, 1.0, rtol=1e-5)
        np.testing.assert_allclose(sde.log_snr(t), -g, rtol=1e-6)
        np.testing.assert_allclose(sde.t_from_log_snr(sde.log_snr(t[1:-1])), t[1:-1], atol=1e-4)


def test_reverse_drift_and_levels():
    """f x - c g^2 score with c = 1 (reverse SDE) or 1/2 (probability flow), against the VP closed forms."""
    sde, t = VPSDE(), jnp.array([0.1, 0.5, 0.9])
    x, score = jnp.ones((3, 2)), jnp.full((3, 2), 2.0)
    beta = np.asarray(sde.beta(t))[:, None]
    for c, flow in ((1.0, False), (0.5, True)):
        want = -0.5 * beta * 1.0 - c * beta * 2.0
        np.testing.assert_allclose(
            sde.reverse_drift(x, t, score, probability_flow=flow), want + 0 * x, rtol=1e-6
        )
    assert VPSDE().timesteps() is None and DiscreteDDPM().timesteps().shape == (1000,)


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        VPSDE(beta_min=1.0, beta_max=0.5)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(sigma_min=2.0, sigma_max=1.0)


def test_processes_are_hashable_static_arguments():
    assert VPSDE() == VPSDE() and hash(VESDE()) == hash(VESDE())
    f = jax.jit(lambda sde, t: sde.sigma(t), static_argnums=0)
    np.testing.assert_allclose(f(EDMSDE(), jnp.ones(2)), 1.0)
