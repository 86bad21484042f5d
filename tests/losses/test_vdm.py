"""VDM's continuous-time ELBO: closed form on a point mass, agreement with likelihood-weighted DSM."""

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.losses.score import LikelihoodWeighting, denoising_score_matching, vdm_elbo
from gl_jax.sde import LearnedSchedule

# VDM's end points, gamma linear in t (its "fixed linear" schedule): gamma(0) = -13.3, gamma(1) = 5.
SDE = LearnedSchedule(gamma=lambda t: -13.3 + 18.3 * t)
LEVELS, K_STAR, D = 256, 100, 4
X_STAR = 2 * (K_STAR + 0.5) / LEVELS - 1


def point_mass_eps(scale=1.0):
    """E[eps | z_t] for the point mass at X_STAR: (z - alpha X_STAR) / sigma, optionally scaled."""
    return lambda z, t: scale * (z - SDE.alpha(t)[:, None] * X_STAR) / SDE.sigma(t)[:, None]


def test_point_mass_bound_is_the_prior_kl():
    x_int = jnp.full((8192, D), K_STAR)
    out = vdm_elbo(jax.random.key(0), point_mass_eps(), SDE, x_int, levels=LEVELS)
    a2, s2 = float(jax.nn.sigmoid(-5.0)), float(jax.nn.sigmoid(5.0))
    prior = 0.5 * D * (s2 + a2 * X_STAR**2 - np.log(s2) - 1.0)  # In float64.
    np.testing.assert_allclose(out["prior"], prior, rtol=1e-5)
    np.testing.assert_allclose(out["diffusion"], 0.0, atol=1e-5)
    # Reconstruction: E_delta[-log softmax] with delta ~ N(0, r^2), r = sigma_0 / alpha_0 = exp(-13.3 / 2),
    # by quadrature over delta and the neighbouring levels (farther ones contribute nothing).
    r, spacing = np.exp(-13.3 / 2), 2 / LEVELS
    delta = np.linspace(-8 * r, 8 * r, 20001)
    offsets = spacing * np.arange(-4, 5)
    logits = -0.5 * ((delta[:, None] - offsets[None]) / r) ** 2
    nll = -(logits[:, 4] - np.logaddexp.reduce(logits, axis=1))
    expected = D * np.sum(nll * np.exp(-0.5 * (delta / r) ** 2)) / np.sum(np.exp(-0.5 * (delta / r) ** 2))
    rec = np.asarray(out["reconstruction"])
    assert abs(rec.mean() - expected) < 4 * rec.std() / np.sqrt(len(rec)) + 1e-6, (rec.mean(), expected)
    np.testing.assert_allclose(out["bpd"], out["total"] / (D * np.log(2)), rtol=1e-6)
    worse = vdm_elbo(jax.random.key(0), point_mass_eps(1.1), SDE, x_int, levels=LEVELS)
    assert np.all(np.asarray(worse["total"]) > np.asarray(out["total"]) + 1e-3)


def test_diffusion_term_is_half_the_likelihood_weighted_dsm():
    """1/2 gamma' || eps - eps_hat ||^2 = 1/2 (g^2 / sigma^2) || eps - eps_hat ||^2: the same objective."""
    eps_fn = point_mass_eps(1.2)
    n = 100_000
    x_int = jnp.full((n, D), K_STAR)
    diff = np.asarray(vdm_elbo(jax.random.key(1), eps_fn, SDE, x_int, levels=LEVELS)["diffusion"])
    keys = jax.random.split(jax.random.key(2), n)
    x = jnp.full((n, D), X_STAR)
    per_example = jax.vmap(
        lambda k, xi: denoising_score_matching(
            k[None], eps_fn, SDE, xi[None], weighting=LikelihoodWeighting(), prediction="eps", reduce="sum"
        )[0]
    )(keys, x)
    dsm = 0.5 * (SDE.T - SDE.t_min) * np.asarray(per_example)
    se = np.hypot(diff.std(), dsm.std()) / np.sqrt(n)
    assert abs(diff.mean() - dsm.mean()) < 3.5 * se, (diff.mean(), dsm.mean(), se)
