"""Predictor-corrector, DDIM and EDM samplers with exact mixture scores: targets, NFE, convergence order."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.analytic import random_mixture
from gl_jax.data.toy import ring_mixture
from gl_jax.samplers.ddim import ddim
from gl_jax.samplers.edm import edm_sampler
from gl_jax.samplers.pc import pc_sampler
from gl_jax.sde import EDMSDE, VESDE, VPSDE
from tests.samplers.test_euler_maruyama import sliced_w2

N = 2000


def _sw2_excess(gmm, x, seed=0):
    ref = jnp.asarray(gmm.sample_numpy(np.random.default_rng(seed), x.shape[0]))
    ref2 = jnp.asarray(gmm.sample_numpy(np.random.default_rng(seed + 1), x.shape[0]))
    key = jax.random.key(7)
    return sliced_w2(x, ref, key) - sliced_w2(ref2, ref, key)


@pytest.mark.parametrize("predictor", ["euler_maruyama", "reverse_diffusion", "ancestral"])
@pytest.mark.parametrize("corrector", ["langevin", "annealed_langevin", None])
def test_pc_sampler_matches_mixture(predictor, corrector):
    gmm, sde = ring_mixture(), VPSDE()
    sample = jax.jit(
        lambda k: pc_sampler(
            k, gmm.score_fn(sde), sde, (N, 2), steps=300, predictor=predictor, corrector=corrector
        )
    )
    result = sample(jax.random.key(0))
    assert int(result.nfe) == (300 if corrector is None else 600)
    assert _sw2_excess(gmm, result.x) < 0.06


def test_pc_sampler_on_ve_sde():
    gmm, sde = ring_mixture(), VESDE(sigma_max=10.0)
    x = pc_sampler(jax.random.key(1), gmm.score_fn(sde), sde, (N, 2), steps=500).x
    assert _sw2_excess(gmm, x) < 0.06


def test_pc_sampler_rejects_unknown_names():
    sde = VPSDE()
    with pytest.raises(ValueError, match="predictor"):
        pc_sampler(jax.random.key(0), lambda x, t: -x, sde, (2, 2), steps=2, predictor="heun")
    with pytest.raises(ValueError, match="corrector"):
        pc_sampler(jax.random.key(0), lambda x, t: -x, sde, (2, 2), steps=2, corrector="hmc")


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_mixture(eta):
    gmm, sde = ring_mixture(), VPSDE()
    result = jax.jit(lambda k: ddim(k, gmm.score_fn(sde), sde, (N, 2), steps=100, eta=eta, grid="quadratic"))(
        jax.random.key(2)
    )
    assert int(result.nfe) == 100
    assert _sw2_excess(gmm, result.x) < 0.06


def test_ddim_eta0_is_deterministic_given_x_init():
    gmm, sde = random_mixture(4), VPSDE()
    x_init = jax.random.normal(jax.random.key(0), (16, 4))
    a = ddim(jax.random.key(1), gmm.score_fn(sde), sde, (16, 4), steps=20, x_init=x_init).x
    b = ddim(jax.random.key(2), gmm.score_fn(sde), sde, (16, 4), steps=20, x_init=x_init).x
    np.testing.assert_array_equal(a, b)


def _edm_reference(gmm, sde, x_init, sigmas_end):
    """The probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma from sigma_max to sigma_min, then D."""
    denoise = gmm.denoiser_fn(sde)
    batch = x_init.shape[0]
    term = diffrax.ODETerm(lambda s, x, _: (x - denoise(x, jnp.full((batch,), s))) / s)
    sol = diffrax.diffeqsolve(
        term,
        diffrax.Tsit5(),
        t0=sigmas_end[0],
        t1=sigmas_end[1],
        dt0=-0.01,
        y0=x_init,
        stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=1e-7),
        max_steps=100_000,
    )
    return denoise(sol.ys[-1], jnp.full((batch,), sigmas_end[1]))


@pytest.mark.parametrize("dim", [2, 16])
def test_edm_heun_converges_at_second_order(dim):
    gmm, sde = random_mixture(dim, seed=dim), EDMSDE(sigma_max=20.0)
    x_init = 20.0 * jax.random.normal(jax.random.key(3), (64, dim))
    ref = _edm_reference(gmm, sde, x_init, (sde.T, sde.t_min))
    steps = np.array([16, 24, 32, 48, 64])
    run = jax.jit(
        lambda n: edm_sampler(jax.random.key(0), gmm.score_fn(sde), sde, (64, dim), steps=n, x_init=x_init).x,
        static_argnums=0,
    )
    errors = np.array([float(jnp.sqrt(jnp.mean((run(int(n)) - ref) ** 2))) for n in steps])
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - 2.0) < 0.3, (errors, slope)


@pytest.mark.parametrize("sde", [EDMSDE(), VPSDE()], ids=["edm", "vp"])
@pytest.mark.parametrize("churn", [0.0, 30.0])
def test_edm_sampler_matches_mixture(sde, churn):
    gmm = ring_mixture()
    result = jax.jit(
        lambda k: edm_sampler(
            k, gmm.score_fn(sde), sde, (N, 2), steps=18, s_churn=churn, s_tmin=0.01, s_tmax=1.0, s_noise=1.007
        )
    )(jax.random.key(4))
    assert int(result.nfe) == 35
    assert _sw2_excess(gmm, result.x) < 0.06
