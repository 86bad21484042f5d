"""Inversion with exact mixture scores: convergence orders of the latent and of the round trip, partial paths,
labels, NFE, jit and vmap, and latents that follow the prior."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gl_jax.analytic import random_mixture
from gl_jax.samplers.invert import INVERSION_METHODS, invert, sample_from_latent, with_labels
from gl_jax.samplers.ode import probability_flow_drift
from gl_jax.sde import VPSDE

SDE = VPSDE()
STEPS = (16, 32, 64)  # Each costs a compilation of both solves.

# (method, grid, order of the latent's error, order of the round trip's error). An order-p one-step method
# and its reverse on the same grid undo each other up to (1 - (-1)^p) e h^(p+1) per step, e the method's
# leading error coefficient (the reverse is the method's adjoint, whose leading term is (-1)^p e h^(p+1):
# Hairer, Lubich & Wanner 2006, "Geometric Numerical Integration", sec. II.3). For the first-order methods
# the round trip is first order; for Heun's second-order methods the leading terms cancel and it is third
# order. Measured slopes over 16-64 steps (float64, 4-D random_mixture): latent 0.96 / 1.08 / 2.05 /
# 1.87, round trip 0.93 / 0.98 / 2.93 / 3.01 (over 16-128: latent 0.96 / 1.06 / 2.05 / 1.91, round trip
# 0.94 / 0.99 / 2.94 / 3.01).
ORDERS = [
    ("ddim", "uniform", 1, 1),
    ("euler", "uniform", 1, 1),
    ("heun", "uniform", 2, 3),
    ("edm", "karras", 2, 3),
]


def _median_error(x, ref):
    # Median over samples: a few points near the boundary between modes, where the flow is very
    # sensitive, would otherwise dominate the error before the asymptotic regime.
    return float(np.median(np.linalg.norm(np.asarray(x - ref), axis=1)))


def _slope(steps, errors):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize("method, grid, latent_order, round_trip_order", ORDERS)
def test_convergence_orders(method, grid, latent_order, round_trip_order):
    """The latent converges to the exact flow at the solver's order; invert-then-sample returns the data.

    In float64: the third-order round trip reaches ~1e-4 at 64 steps, not far from float32's rounding.
    """
    with jax.enable_x64(True):
        gmm = random_mixture(4)
        score = gmm.score_fn(SDE)
        x = jnp.asarray(gmm.sample_numpy(np.random.default_rng(0), 128), jnp.float64)  # [B, D]
        drift = probability_flow_drift(score, SDE)
        exact = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: drift(y, t)),
            diffrax.Tsit5(),
            t0=SDE.t_min,
            t1=SDE.T,
            dt0=1e-3,
            y0=x,
            stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-11),
            max_steps=100_000,
        ).ys[0]
        # "edm" returns the denoiser's output at t_min (its last step, to sigma = 0).
        target = gmm.denoiser_fn(SDE)(x, jnp.full(x.shape[:1], SDE.t_min)) if method == "edm" else x
        latent_errors, round_trip_errors = [], []
        for n in STEPS:
            options = dict(steps=n, method=method, grid=grid)

            @jax.jit
            def round_trip(x, options=options):
                inverted = invert(score, SDE, x, **options)
                return inverted, sample_from_latent(score, SDE, inverted.z, **options)

            inverted, back = round_trip(x)
            assert inverted.z.dtype == jnp.float64
            assert int(inverted.nfe) == INVERSION_METHODS[method] * n
            latent_errors.append(_median_error(inverted.z, exact))
            round_trip_errors.append(_median_error(back.x, target))
    latent_slope, round_trip_slope = _slope(STEPS, latent_errors), _slope(STEPS, round_trip_errors)
    assert abs(latent_slope - latent_order) < 0.3, (latent_slope, latent_errors)
    assert abs(round_trip_slope - round_trip_order) < 0.3, (round_trip_slope, round_trip_errors)
    # The limit is the data itself: at 64 steps the round trip is within these of it.
    assert round_trip_errors[-1] < {1: 0.1, 3: 1e-3}[round_trip_order]


def test_partial_path_labels_jit_and_vmap():
    gmm = random_mixture(3, num_modes=4, seed=1)
    score = gmm.score_fn(SDE)
    x = gmm.sample(jax.random.key(0), 16)  # [B, D]

    # Up to t_end and back from there: the same grid in both directions.
    z = invert(score, SDE, x, steps=40, method="heun", t_end=0.4).z
    back = sample_from_latent(score, SDE, z, steps=40, method="heun", t_start=0.4).x
    np.testing.assert_allclose(back, x, atol=1e-3)
    assert float(jnp.mean((z - x) ** 2)) > 0.05  # Noised, not the identity.

    # A class-conditional score_fn(x, t, labels) under labels equals the bound two-argument one.
    conditional = lambda x, t, labels: score(x, t) + labels[:, None]
    labels = jnp.arange(16) % 2
    a = jax.jit(lambda x: invert(conditional, SDE, x, steps=8, labels=labels).z)(x)
    b = invert(with_labels(conditional, labels), SDE, x, steps=8).z
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert with_labels(score, None) is score

    # vmap over examples gives the batched result.
    one = lambda xi: invert(score, SDE, xi[None], steps=8, method="euler").z[0]
    np.testing.assert_allclose(jax.vmap(one)(x), invert(score, SDE, x, steps=8, method="euler").z, atol=1e-5)

    with pytest.raises(ValueError, match="inversion method"):
        invert(score, SDE, x, steps=8, method="rk4")
    with pytest.raises(ValueError, match="inversion method"):
        sample_from_latent(score, SDE, x, steps=8, method="dopri5")


def test_latents_of_data_follow_the_prior():
    """The flow maps p_0 to p_T ~ N(0, I): latents of exact data samples pass a KS test, per coordinate."""
    gmm = random_mixture(2, num_modes=3, seed=2)
    x = gmm.sample(jax.random.key(3), 2000)
    z = np.asarray(jax.jit(lambda x: invert(gmm.score_fn(SDE), SDE, x, steps=64, method="heun").z)(x))
    for d in range(z.shape[1]):
        assert stats.kstest(z[:, d], "norm").pvalue > 0.01
    assert abs(float(np.corrcoef(z.T)[0, 1])) < 0.1
