"""Fitted time steps: the dynamic program against brute force, the grid's form, jit, and a lower endpoint
error than the fixed grids on Gaussian mixtures with exact scores."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.analytic import random_mixture
from gl_jax.data.toy import ring_mixture
from gl_jax.samplers.base import time_grid
from gl_jax.samplers.dpm_solver import dpm_solver
from gl_jax.samplers.dpm_solver_multistep import dpm_solver_multistep
from gl_jax.samplers.ipndm import ipndm
from gl_jax.samplers.time_steps import fit_time_steps, shortest_path
from gl_jax.sde import EDMSDE, VPSDE


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 7])
def test_shortest_path_is_the_brute_force_optimum(steps):
    n = 7
    rng = np.random.default_rng(steps)
    costs = np.where(np.triu(np.ones((n + 1, n + 1)), 1) > 0, rng.uniform(0.1, 1.0, (n + 1, n + 1)), np.inf)
    path = np.asarray(shortest_path(jnp.asarray(costs), steps))
    assert path.shape == (steps + 1,) and path[0] == 0 and path[-1] == n and np.all(np.diff(path) > 0)
    total = lambda p: sum(costs[a, b] for a, b in itertools.pairwise(p))
    best = min(total((0, *inner, n)) for inner in itertools.combinations(range(1, n), steps - 1))
    np.testing.assert_allclose(total(path), best, rtol=1e-6)


def test_shortest_path_rejects_too_many_steps():
    with pytest.raises(ValueError, match="steps"):
        shortest_path(jnp.zeros((4, 4)), 4)


def _is_grid(ts, steps, first, last):
    ts = np.asarray(ts)
    assert ts.shape == (steps + 1,)
    assert np.all(np.diff(ts) < 0), ts
    np.testing.assert_allclose([ts[0], ts[-1]], [first, last], rtol=1e-6)


def test_dynamic_programming_grid_is_a_subset_of_the_candidates():
    """Stage 1 alone picks candidates; an array of candidates (here from below T) is taken as given and the
    grid starts at its first time."""
    gmm, sde = ring_mixture(), VPSDE()
    candidates = time_grid(sde, 16, grid="quadratic", t_start=0.8)
    ts = fit_time_steps(
        jax.random.key(0), gmm.score_fn(sde), sde, (32, 2), steps=4, candidates=16, grid=candidates
    )
    _is_grid(ts, 4, 0.8, sde.t_min)
    assert np.all(np.isin(np.asarray(ts), np.asarray(candidates)))


def _endpoint_errors(gmm, sampler, steps, grids, *, fit_kwargs):
    """RMS endpoint errors on 256 held-out starting points, fitted grid vs each fixed grid."""
    sde = EDMSDE()  # sigma in [0.002, 80], the setting of benchmarks/p1_sampler_error.py.
    score = gmm.score_fn(sde)
    fit = jax.jit(
        lambda key: fit_time_steps(
            key, score, sde, (128, gmm.dim), steps=steps, sampler=sampler, **fit_kwargs
        )
    )
    fitted = fit(jax.random.key(1))  # Both stages trace under `jax.jit`.
    _is_grid(fitted, steps, sde.T, sde.t_min)
    x = sde.prior_sample(jax.random.key(5), (256, gmm.dim))
    # DPM-Solver-3 with 300 log-SNR steps: ~1e-5 from the exact flow, far below the errors compared.
    exact = dpm_solver(jax.random.key(0), score, sde, x.shape, steps=300, x_init=x).x
    run = jax.jit(lambda g: sampler(jax.random.key(0), score, sde, x.shape, steps=steps, x_init=x, grid=g).x)
    rms = lambda g: float(jnp.sqrt(jnp.mean((run(g) - exact) ** 2)))
    return rms(fitted), {name: rms(time_grid(sde, steps, grid=name)) for name in grids}


def test_fitted_grid_beats_the_default_grid_at_5_nfe():
    """iPNDM, 5 steps on the 8-mode ring: the fitted grid's endpoint error is under half the default
    (Karras) grid's and below the log-SNR grid's (measured 0.011 against 0.18 and 0.044)."""
    fitted, fixed = _endpoint_errors(
        ring_mixture(), ipndm, 5, ("karras", "logsnr"), fit_kwargs=dict(candidates=30, iterations=60)
    )
    assert fitted < 0.5 * fixed["karras"], (fitted, fixed)
    assert fitted < fixed["logsnr"], (fitted, fixed)


@pytest.mark.slow
@pytest.mark.parametrize("steps", [5, 10])
@pytest.mark.parametrize(
    "name, sampler",
    [("ipndm", ipndm), ("dpm_solver_multistep_2", functools.partial(dpm_solver_multistep, order=2))],
)
def test_fitted_grid_beats_every_fixed_grid(name, sampler, steps):
    """On an 8-mode mixture in 8-D the fitted grid's endpoint error is below 0.7 times the best fixed grid's
    at 5 and 10 steps (measured ratios 1.8 to 5.7)."""
    fitted, fixed = _endpoint_errors(
        random_mixture(8, seed=1),
        sampler,
        steps,
        ("uniform", "quadratic", "logsnr", "karras"),
        fit_kwargs=dict(candidates=40, iterations=100),
    )
    assert fitted < 0.7 * min(fixed.values()), (name, steps, fitted, fixed)
