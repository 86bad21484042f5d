"""The VP SDE against its closed forms and against the generic (autodiff) derivations of the base class."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gl_jax.sde import VPSDE, GaussianDiffusion

T = jnp.linspace(1e-3, 1.0, 37)


class _GenericVP(GaussianDiffusion):
    """Only alpha and sigma: everything else comes from the base class."""

    def __init__(self, sde):
        self._sde = sde

    def alpha(self, t):
        return self._sde.alpha(t)

    def sigma(self, t):
        return self._sde.sigma(t)


def test_vp_alpha_sigma_closed_form():
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    t = np.asarray(T, np.float64)
    integral = 0.1 * t + 0.5 * t**2 * (20.0 - 0.1)  # int_0^t beta(s) ds
    np.testing.assert_allclose(sde.alpha(T), np.exp(-0.5 * integral), rtol=1e-5)
    np.testing.assert_allclose(sde.sigma(T), np.sqrt(1 - np.exp(-integral)), rtol=1e-5)
    # Variance preserving: alpha^2 + sigma^2 = 1.
    np.testing.assert_allclose(sde.alpha(T) ** 2 + sde.sigma(T) ** 2, 1.0, rtol=1e-6)


def test_vp_drift_diffusion_match_generic_derivation():
    sde = VPSDE()
    generic = _GenericVP(sde)
    np.testing.assert_allclose(sde.f(T), -0.5 * (0.1 + T * 19.9), rtol=1e-6)
    np.testing.assert_allclose(sde.g2(T), 0.1 + T * 19.9, rtol=1e-6)
    np.testing.assert_allclose(generic.f(T), sde.f(T), rtol=1e-4)
    np.testing.assert_allclose(generic.g2(T), sde.g2(T), rtol=1e-3)
    x = jax.random.normal(jax.random.key(0), (T.shape[0], 3))
    drift, diffusion = sde.drift_diffusion(x, T)
    np.testing.assert_allclose(drift, sde.f(T)[:, None] * x, rtol=1e-6)
    np.testing.assert_allclose(diffusion, jnp.sqrt(sde.g2(T)), rtol=1e-6)


def test_marginal_matches_forward_sde_simulation():
    """Euler-Maruyama on the forward SDE from a fixed x0 reproduces the closed-form mean and std."""
    sde = VPSDE()
    n, steps = 20_000, 2000
    x0 = jnp.full((n, 1), 1.5)
    dt = 1.0 / steps

    def body(i, x):
        t = jnp.full((n,), i * dt)
        drift, g = sde.drift_diffusion(x, t)
        z = jax.random.normal(jax.random.fold_in(jax.random.key(1), i), x.shape)
        return x + drift * dt + g[:, None] * jnp.sqrt(dt) * z

    t_end = 0.3
    x = jax.jit(lambda x: jax.lax.fori_loop(0, int(t_end * steps), body, x))(x0)
    mean, std = sde.marginal(x0[:1], jnp.array([t_end]))
    se_mean = float(std[0, 0]) / np.sqrt(n)
    assert abs(float(x.mean()) - float(mean[0, 0])) < 4 * se_mean + 2e-3
    assert abs(float(x.std()) - float(std[0, 0])) < 0.02 * float(std[0, 0])


@pytest.mark.parametrize("t", [1e-3, 0.1, 0.5, 1.0])
def test_log_snr_roundtrip_and_generic_inverse(t):
    sde = VPSDE()
    tt = jnp.array([t])
    lam = sde.log_snr(tt)
    np.testing.assert_allclose(lam, jnp.log(sde.alpha(tt) ** 2 / sde.sigma(tt) ** 2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sde.t_from_log_snr(lam), tt, rtol=1e-4)
    np.testing.assert_allclose(_GenericVP(sde).t_from_log_snr(lam), tt, rtol=1e-4)


def test_log_snr_is_decreasing():
    assert np.all(np.diff(np.asarray(VPSDE().log_snr(T))) < 0)


def test_prior_sample_and_logp():
    sde = VPSDE()
    z = sde.prior_sample(jax.random.key(0), (4096, 3))
    assert z.shape == (4096, 3)
    assert stats.kstest(np.asarray(z).ravel(), "norm").pvalue > 1e-3
    expected = stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(np.asarray(z[:5]))
    np.testing.assert_allclose(sde.prior_logp(z[:5]), expected, rtol=1e-5)
    # The prior is the marginal at T up to alpha(T) ~ 6.7e-3.
    assert float(sde.alpha(jnp.array([1.0]))[0]) < 1e-2


def test_vp_rejects_bad_betas():
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        VPSDE(beta_min=1.0, beta_max=0.5)
