"""DPM-Solver, DPM-Solver++ and UniPC with exact Gaussian-mixture scores: convergence order against a
reference solution of the probability-flow ODE, sample quality, process-agnosticism, nfe, jit and vmap."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.analytic import random_mixture
from gl_jax.data.toy import ring_mixture
from gl_jax.samplers.dpm_solver import dpm_solver, dpm_solver_pp
from gl_jax.samplers.unipc import unipc
from gl_jax.sde import EDMSDE, VESDE, VPSDE
from tests.conftest import REPO
from tests.samplers.test_euler_maruyama import sliced_w2

# name -> (sampler, options, expected global order). The lower-order warm-up steps of the multistep methods
# are taken at high noise, where the prediction barely moves, so they do not lower the measured order.
# DPM-Solver++(3M) with the reference implementation's second difference (the default) is order 2, with
# the Taylor coefficient order 3.
METHODS = {
    "dpm_solver_1": (dpm_solver, {"order": 1}, 1),
    "dpm_solver_2": (dpm_solver, {"order": 2}, 2),
    "dpm_solver_3": (dpm_solver, {"order": 3}, 3),
    "dpm_solver_pp_2m": (dpm_solver_pp, {"order": 2}, 2),
    "dpm_solver_pp_3m": (dpm_solver_pp, {"order": 3}, 2),
    "dpm_solver_pp_3m_taylor": (dpm_solver_pp, {"order": 3, "variant_3m": "taylor"}, 3),
    "dpm_solver_pp_2s": (dpm_solver_pp, {"order": 2, "multistep": False}, 2),
    "unipc_2": (unipc, {"order": 2}, 3),  # UniPC-p has order p + 1 (the corrector adds one).
    "unipc_3": (unipc, {"order": 3}, 4),
}
CONVERGENCE_STEPS = (256, 1024)  # Two points a factor 4 apart: each steps value costs a compilation.

# Runs in a float64 subprocess (x64 must not leak into the other tests): float32 round-off (~1e-6) would
# hide the third- and fourth-order errors well before the asymptotic regime, which for these mixtures
# starts only at about 32-64 log-SNR steps (at 8-32 steps the slopes are erratic, up to 4-5) and for UniPC-3
# at about 256 (its local slopes over 128-256-512-1024 steps: 3.5-3.6, 3.7-3.9, 3.9-4.0).
_CONVERGENCE_SCRIPT = r"""
import json, sys
import jax
import jax.numpy as jnp
import numpy as np
from gl_jax.analytic import random_mixture
from gl_jax.data.toy import ring_mixture
from gl_jax.sde import VPSDE
from tests.samplers.test_dpm_solver import CONVERGENCE_STEPS, METHODS

assert jax.config.jax_enable_x64
sde = VPSDE()


def reference(score_fn, x_init, n):
    # The probability-flow ODE dx/dt = f x - g^2/2 s in the variable lambda = log(alpha/sigma): with
    # g^2 = -2 sigma^2 dlambda/dt it is d(x/alpha)/dlambda = e^{-lambda} sigma s(x, t(lambda)), non-stiff for
    # these mixtures. Classical RK4 with n uniform steps in lambda.
    ends = jnp.array([sde.T, sde.t_min])
    lam0, lam1 = 0.5 * sde.log_snr(ends.astype(jnp.float64))
    t_of = lambda lam: sde.t_from_log_snr(2.0 * lam)[None]

    def rhs(lam, y):
        t = t_of(lam)
        a, s = sde.alpha(t), sde.sigma(t)
        return jnp.exp(-lam) * s * score_fn(a * y, jnp.full(y.shape[:1], t[0]))

    h = (lam1 - lam0) / n

    def body(j, y):
        lam = lam0 + j * h
        k1 = rhs(lam, y)
        k2 = rhs(lam + h / 2, y + h / 2 * k1)
        k3 = rhs(lam + h / 2, y + h / 2 * k2)
        k4 = rhs(lam + h, y + h * k3)
        return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    y = jax.jit(lambda y, n: jax.lax.fori_loop(0, n, body, y))(x_init / sde.alpha(ends[:1]), n)
    return np.asarray(sde.alpha(ends[1:]) * y)


out = {}
problems = {"ring_2d": ring_mixture, "random_16d": lambda: random_mixture(16)}
for name in sys.argv[1:]:
    gmm = problems[name]()
    score = gmm.score_fn(sde)
    x_init = jax.random.normal(jax.random.key(0), (256, gmm.dim), jnp.float64)
    ref = reference(score, x_init, 4000)
    coarse = reference(score, x_init, 2000)
    errors = {}
    for method, (sampler, opts, _) in METHODS.items():
        errors[method] = []
        for steps in CONVERGENCE_STEPS:
            run = lambda x: sampler(jax.random.key(0), score, sde, x.shape, steps=steps, x_init=x, **opts)
            x = np.asarray(jax.jit(run)(x_init).x)
            assert x.dtype == np.float64
            # The median over points: a few points near a boundary between modes follow a very sensitive
            # trajectory and reach the asymptotic regime only at much smaller steps.
            errors[method].append(float(np.median(np.linalg.norm(x - ref, axis=-1))))
    out[name] = {"reference_error": float(np.median(np.linalg.norm(coarse - ref, axis=-1))), "errors": errors}
print("RESULT" + json.dumps(out))
"""


@functools.cache
def _convergence_errors(problem: str) -> dict:
    # Little XLA optimisation: compiling 18 small programs per problem dominates the run time.
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    env = dict(os.environ, JAX_ENABLE_X64="1", XLA_FLAGS=flags)
    command = [sys.executable, "-c", _CONVERGENCE_SCRIPT, problem]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])[problem]


# The 16-D mixture repeats the 2-D ring's check in more dimensions (~45 s of compilation): -m slow.
PROBLEMS = ["ring_2d", pytest.param("random_16d", marks=pytest.mark.slow)]


def _slope(errors):
    """Least-squares convergence order: minus the slope of log(error) against log(steps)."""
    return -np.polyfit(np.log(CONVERGENCE_STEPS), np.log(errors), 1)[0]


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("method", list(METHODS))
def test_convergence_order(problem, method):
    result = _convergence_errors(problem)
    errors = result["errors"][method]
    # The RK4 reference (4000 steps) differs from a 2000-step one by ~1e-11; solver errors are >= 5e-10.
    assert result["reference_error"] < 5e-11
    assert min(errors) > 10 * result["reference_error"]
    order = METHODS[method][2]
    assert abs(_slope(errors) - order) < 0.3, (method, problem, errors, _slope(errors))


@pytest.mark.parametrize("problem", PROBLEMS)
def test_higher_order_multistep_beats_lower_order(problem):
    """The order-3 multistep formulas are more accurate than order 2 at every step count, warm-up included.

    Both 3M variants, the reference implementation's second-order one included."""
    errors = _convergence_errors(problem)["errors"]
    for third_order in ("dpm_solver_pp_3m", "dpm_solver_pp_3m_taylor"):
        assert np.all(np.array(errors[third_order]) < 0.5 * np.array(errors["dpm_solver_pp_2m"]))
    assert np.all(np.array(errors["unipc_3"]) < 0.5 * np.array(errors["unipc_2"]))


SAMPLE_METHODS = {
    "vp": [(dpm_solver, {"order": 3}), (dpm_solver_pp, {"order": 2}), (unipc, {"order": 2})],
    "edm": [
        (dpm_solver_pp, {"order": 3}),
        (dpm_solver_pp, {"order": 2, "multistep": False}),
        (unipc, {"order": 3}),
    ],
}


@pytest.mark.parametrize("name, sde", [("vp", VPSDE()), ("edm", EDMSDE())])
def test_mixture_target_sliced_w2(name, sde):
    """With 20 steps, SW2(samples, exact samples) on the 8-mode ring, averaged over 3 draws of 8000, is
    within 0.02 of the exact-vs-exact floor averaged likewise (~0.06; one draw's SW2 varies by +-0.02 from
    the modes' random counts, hence the averages)."""
    gmm, n, draws = ring_mixture(), 8000, 3
    ref = jnp.asarray(gmm.sample_numpy(np.random.default_rng(0), n))
    key = jax.random.key(2)
    exact = [gmm.sample_numpy(np.random.default_rng(1 + i), n) for i in range(draws)]
    floor = np.mean([sliced_w2(jnp.asarray(e), ref, key) for e in exact])
    keys = jax.random.split(jax.random.key(1), draws)
    score = gmm.score_fn(sde)
    for sampler, opts in SAMPLE_METHODS[name]:
        draw = lambda k, sampler=sampler, opts=opts: sampler(k, score, sde, (n, 2), steps=20, **opts).x
        xs = jax.jit(jax.vmap(draw))(keys)
        assert xs.dtype == jnp.float32
        dist = np.mean([sliced_w2(x, ref, key) for x in xs])
        assert dist < floor + 0.02, (sampler.__name__, opts, dist, floor)


def test_process_agnostic_vp_equals_edm():
    """The solvers see a process only through lambda and x / alpha: a VP run and an EDM run over the same
    log-SNR range, started from the same x / alpha, give the same x / alpha (up to float32 round-off)."""
    gmm, vp = ring_mixture(), VPSDE()
    ends = jnp.array([vp.T, vp.t_min])
    lam = 0.5 * vp.log_snr(ends)
    edm = EDMSDE(sigma_min=float(jnp.exp(-lam[1])), sigma_max=float(jnp.exp(-lam[0])))
    x_edm = jax.random.normal(jax.random.key(0), (64, 2)) * edm.T
    x_vp = x_edm * vp.alpha(ends[:1])
    for sampler, opts in [(dpm_solver, {"order": 3}), (dpm_solver_pp, {"order": 3}), (unipc, {"order": 3})]:
        a = sampler(jax.random.key(0), gmm.score_fn(vp), vp, (64, 2), steps=12, x_init=x_vp, **opts).x
        b = sampler(jax.random.key(0), gmm.score_fn(edm), edm, (64, 2), steps=12, x_init=x_edm, **opts).x
        np.testing.assert_allclose(a / vp.alpha(ends[1:]), b, atol=2e-4)
        assert float(jnp.abs(b).max()) > 1.0  # Non-trivial outputs (the ring has radius 2).


def test_ve_process_matches_vp_ddim_at_same_log_snr():
    """VESDE too: order-1 DPM-Solver on VE equals DDIM on VP after rescaling by alpha."""
    gmm, vp = random_mixture(4, seed=3), VPSDE()
    ends = jnp.array([0.6, vp.t_min])
    lam = 0.5 * vp.log_snr(ends)
    ve = VESDE(sigma_min=float(jnp.exp(-lam[1])), sigma_max=float(jnp.exp(-lam[0])), t_min=0.0)
    x_ve = jax.random.normal(jax.random.key(3), (32, 4)) * ve.prior_std()
    x_vp = x_ve * vp.alpha(ends[:1])
    a = dpm_solver(
        jax.random.key(0), gmm.score_fn(vp), vp, (32, 4), steps=8, order=2, x_init=x_vp, t_start=0.6
    )
    b = dpm_solver(jax.random.key(0), gmm.score_fn(ve), ve, (32, 4), steps=8, order=2, x_init=x_ve)
    np.testing.assert_allclose(a.x / vp.alpha(ends[1:]), b.x, atol=2e-4)


def test_gaussian_images_exact_flow():
    """For N(0, s^2 I) data the probability-flow ODE is x_t = x_T sqrt(alpha_t^2 s^2 + sigma_t^2) /
    sqrt(alpha_T^2 s^2 + sigma_T^2) exactly; check it on image-shaped `[B, H, W, C]` data."""
    sde, s = VPSDE(), 0.5

    def score(x, t):
        var = sde.alpha(t) ** 2 * s**2 + sde.sigma(t) ** 2
        return -x / var[:, None, None, None]

    x_init = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
    ends = jnp.array([sde.T, sde.t_min])
    std = jnp.sqrt(sde.alpha(ends) ** 2 * s**2 + sde.sigma(ends) ** 2)
    expected = x_init * std[1] / std[0]
    for sampler, opts in [
        (dpm_solver, {"order": 3}),
        (dpm_solver_pp, {"order": 3}),
        (dpm_solver_pp, {"order": 2, "multistep": False}),
        (unipc, {"order": 2}),
    ]:
        # 40 steps: the data prediction of a broad Gaussian varies fast in lambda (DDIM is off by 0.1 here).
        x = sampler(jax.random.key(0), score, sde, x_init.shape, steps=40, x_init=x_init, **opts).x
        assert x.shape == x_init.shape
        np.testing.assert_allclose(x, expected, atol=6e-3)


def test_order_one_is_ddim():
    """Order 1 of DPM-Solver (noise prediction) and of DPM-Solver++ (data prediction) are both DDIM:
    x_t = alpha_t x0_hat + sigma_t eps_hat (Song et al. 2021a, eq. 12 with eta = 0)."""
    gmm, sde, steps = random_mixture(3, seed=1), VPSDE(), 10
    score = gmm.score_fn(sde)
    x_init = jax.random.normal(jax.random.key(0), (64, 3))
    run = lambda sampler, **kw: sampler(
        jax.random.key(0), score, sde, (64, 3), steps=steps, x_init=x_init, **kw
    )
    a = run(dpm_solver, order=1).x
    b = run(dpm_solver_pp, order=1).x
    c = run(dpm_solver_pp, order=1, multistep=False).x
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
    # An independent DDIM loop on the same grid.
    from gl_jax.samplers.base import time_grid

    ts, x = time_grid(sde, steps, grid="logsnr"), x_init
    for i in range(steps):
        t, t_next = jnp.full((64,), ts[i]), jnp.full((64,), ts[i + 1])
        eps, x0 = gmm.eps_fn(sde)(x, t), gmm.denoiser_fn(sde)(x, t)
        x = sde.alpha(t_next)[:, None] * x0 + sde.sigma(t_next)[:, None] * eps
    np.testing.assert_allclose(a, x, rtol=1e-4, atol=1e-4)
    # Higher orders differ from DDIM (the test would not notice a solver that ignores `order`).
    assert not np.allclose(run(dpm_solver, order=2).x, a, atol=1e-3)


@pytest.mark.parametrize(
    "sampler, opts, steps, nfe",
    [
        (dpm_solver, {"order": 2}, 5, 10),
        (dpm_solver, {"order": 3}, 5, 15),
        (dpm_solver_pp, {"order": 2}, 5, 5),
        (dpm_solver_pp, {"order": 3}, 5, 5),
        (dpm_solver_pp, {"order": 3}, 2, 2),  # Fewer steps than the warm-up.
        (dpm_solver_pp, {"order": 2, "multistep": False}, 5, 10),
        (unipc, {"order": 2}, 5, 5),
        (unipc, {"order": 3, "variant": "bh1"}, 5, 5),
        (unipc, {"order": 3}, 1, 1),
    ],
)
def test_nfe_counts_model_calls(sampler, opts, steps, nfe):
    """`nfe` is as documented and equals the number of model evaluations actually executed."""
    calls = []
    score = ring_mixture().score_fn(VPSDE())

    def counting_score(x, t):
        jax.debug.callback(lambda: calls.append(1))  # Runs once per execution, also inside `lax.scan`.
        return score(x, t)

    result = sampler(jax.random.key(0), counting_score, VPSDE(), (8, 2), steps=steps, **opts)
    jax.effects_barrier()
    assert result.nfe.shape == () and jnp.issubdtype(result.nfe.dtype, jnp.integer)
    assert int(result.nfe) == nfe == len(calls)
    assert np.all(np.isfinite(result.x))


@pytest.mark.parametrize(
    "sampler, opts",
    [(dpm_solver_pp, {"order": 3}), (unipc, {"order": 3, "variant": "bh1"})],
)
def test_jit_and_vmap_over_keys(sampler, opts):
    score, sde = ring_mixture().score_fn(VPSDE()), VPSDE()
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(jax.vmap(lambda k: sampler(k, score, sde, (16, 2), steps=6, **opts)))(keys)
    assert batched.x.shape == (3, 16, 2) and batched.nfe.shape == (3,)
    single = sampler(keys[1], score, sde, (16, 2), steps=6, **opts)
    np.testing.assert_allclose(batched.x[1], single.x, rtol=1e-5, atol=1e-5)
    assert not np.allclose(batched.x[0], batched.x[1])  # Different keys, different starting noise.


def test_bad_arguments_raise():
    score, sde = ring_mixture().score_fn(VPSDE()), VPSDE()
    call = lambda sampler, **kw: sampler(jax.random.key(0), score, sde, (4, 2), steps=3, **kw)
    for order in (0, 4):
        with pytest.raises(ValueError, match=r"\(1, 2, 3\)"):
            call(dpm_solver, order=order)
        with pytest.raises(ValueError, match=r"\(1, 2, 3\)"):
            call(dpm_solver_pp, order=order)
        with pytest.raises(ValueError, match=r"\(1, 2, 3\)"):
            call(unipc, order=order)
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        call(dpm_solver_pp, order=3, multistep=False)
    with pytest.raises(ValueError, match="bh1"):
        call(unipc, variant="bh3")
    with pytest.raises(ValueError, match="shape"):
        call(dpm_solver, x_init=jnp.zeros((5, 2)))
