"""The probability-flow ODE sampler: exact Gaussian transport, convergence orders, tolerances and nfe."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

from gl_jax.analytic import gaussian, random_mixture
from gl_jax.samplers.ode import adaptive_nfe, ode_sampler
from gl_jax.sde import VPSDE

SDE = VPSDE()


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_gaussian_prior_is_mapped_to_the_data(method):
    """For Gaussian data the flow keeps xi = (x - alpha mu) / sqrt(alpha^2 s^2 + sigma^2) fixed per
    dimension, so each sample has a closed-form image; the samples' moments match the data's."""
    mu, s = np.array([1.0, -0.5], np.float32), np.array([0.5, 0.3], np.float32)
    data = gaussian(mu, s)
    n = 20_000
    x_T = SDE.prior_sample(jax.random.key(0), (n, 2))
    sample = jax.jit(lambda k: ode_sampler(k, data.score_fn(SDE), SDE, (n, 2), method=method, steps=100))
    result = sample(jax.random.key(0))
    x = np.asarray(result.x)

    def sd(t):
        return np.sqrt(float(SDE.alpha(t)) ** 2 * s**2 + float(SDE.sigma(t)) ** 2)

    t_T, t_0 = jnp.asarray(SDE.T), jnp.asarray(SDE.t_min)
    xi = (np.asarray(x_T) - float(SDE.alpha(t_T)) * mu) / sd(t_T)
    expected = float(SDE.alpha(t_0)) * mu + sd(t_0) * xi
    assert np.max(np.abs(x - expected)) < 1e-3
    # Moments against the data distribution: 4 standard errors, plus the prior mismatch (the prior
    # N(0, I) is not exactly p_T, whose mean alpha(T) mu ~ 0.007 mu shifts the image by ~ s alpha(T) mu).
    shift = s * float(SDE.alpha(t_T)) * np.abs(mu)
    np.testing.assert_array_less(np.abs(x.mean(0) - mu), 4 * s / np.sqrt(n) + shift)
    np.testing.assert_array_less(np.abs(x.std(0) - s), 4 * s / np.sqrt(2 * n) + 1e-3)
    nfe = int(result.nfe)
    assert nfe == 400 if method == "rk4" else (nfe - 1) % 6 == 0 and nfe < 400


def _median_error(x, ref):
    # Median over samples: a few trajectories pass near the boundary between modes, where the flow is
    # very sensitive, and would otherwise dominate the error before the asymptotic regime.
    return float(np.median(np.linalg.norm(np.asarray(x - ref), axis=1)))


@pytest.mark.parametrize("dim", [2, 16])
def test_fixed_step_convergence_orders(dim):
    """Euler, Heun and RK4 converge at orders 1, 2 and 4 to a tight dopri5 reference from the same x_init.

    Run in float64: in float32 the rounding floor (~1e-6) sits where RK4 is barely asymptotic. Measured
    slopes (median error, VP, random_mixture): 2-D 0.99 / 2.00 / 4.12, 16-D 0.99 / 1.98 / 4.07.
    """
    with jax.enable_x64(True):
        gmm = random_mixture(dim)
        score = gmm.score_fn(SDE)
        x0 = jnp.asarray(SDE.prior_sample(jax.random.key(0), (128, dim)), jnp.float64)
        ref = ode_sampler(None, score, SDE, x0.shape, x_init=x0, rtol=1e-11, atol=1e-11, max_steps=20_000)
        assert ref.x.dtype == jnp.float64
        for method, order, steps in (
            ("euler", 1, [128, 256, 512]),
            ("heun", 2, [64, 128, 256]),
            ("rk4", 4, [32, 64, 128]),
        ):
            errors = []
            for n in steps:
                result = ode_sampler(None, score, SDE, x0.shape, x_init=x0, method=method, steps=n)
                assert int(result.nfe) == {"euler": 1, "heun": 2, "rk4": 4}[method] * n
                errors.append(_median_error(result.x, ref.x))
            slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
            assert abs(slope - order) < 0.3, (method, dim, slope, errors)

        # A tighter tolerance gets closer to the reference, at more evaluations.
        errs, nfes = [], []
        for tol in (1e-3, 1e-5, 1e-7):
            result = ode_sampler(None, score, SDE, x0.shape, x_init=x0, rtol=tol, atol=tol)
            errs.append(_median_error(result.x, ref.x))
            nfes.append(int(result.nfe))
        assert errs[0] > 3 * errs[1] > 9 * errs[2], errs
        assert nfes[0] < nfes[1] < nfes[2]
        tsit5 = ode_sampler(None, score, SDE, x0.shape, x_init=x0, method="tsit5", rtol=1e-7, atol=1e-7)
        assert _median_error(tsit5.x, ref.x) < 1e-5


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_adaptive_nfe_counts_every_evaluation(method):
    """nfe = 6 * num_steps + 1, checked against an ordered host callback that counts score calls."""
    gmm = random_mixture(2)
    score = gmm.score_fn(SDE)
    calls = [0]

    def count(x):
        calls[0] += 1
        return x

    def counted_score(x, t):
        x = io_callback(count, jax.ShapeDtypeStruct(x.shape, x.dtype), x, ordered=True)
        return score(x, t)

    sample = jax.jit(lambda k: ode_sampler(k, counted_score, SDE, (64, 2), method=method, rtol=1e-4))
    result = sample(jax.random.key(0))
    jax.block_until_ready(result.x)
    assert calls[0] == int(result.nfe)
    assert (int(result.nfe) - 1) % 6 == 0 and int(adaptive_nfe(jnp.asarray(3))) == 19


def test_x_init_key_and_jit():
    gmm = random_mixture(2)
    score = gmm.score_fn(SDE)
    x_init = jnp.zeros((3, 2))
    run = jax.jit(lambda k, x: ode_sampler(k, score, SDE, (3, 2), method="heun", steps=7, x_init=x).x)
    a, b = run(jax.random.key(0), x_init), run(jax.random.key(1), x_init)
    np.testing.assert_array_equal(a, b)  # Deterministic: the key only draws the start.
    c = ode_sampler(jax.random.key(0), score, SDE, (3, 2), method="heun", steps=7).x
    d = ode_sampler(jax.random.key(1), score, SDE, (3, 2), method="heun", steps=7).x
    assert not np.allclose(c, d)
    # A partial solve from t_start = 0.5 with x_init at 0.5.
    half = ode_sampler(None, score, SDE, (3, 2), method="rk4", steps=10, x_init=x_init, t_start=0.5)
    assert half.x.shape == (3, 2) and np.all(np.isfinite(half.x))
    with pytest.raises(ValueError, match="Unknown ODE method"):
        ode_sampler(None, score, SDE, (3, 2), method="rk45")
    with pytest.raises(ValueError, match="x_init has shape"):
        ode_sampler(None, score, SDE, (3, 2), x_init=jnp.zeros((2, 2)))
