"""Multistep DPM-Solver (noise prediction): convergence order on Gaussian data against the exact solution of
the probability-flow ODE, agreement with diffusers' DPMSolverMultistepScheduler, DDIM at order 1, the
step orders, nfe, jit and vmap."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.data.toy import ring_mixture
from gl_jax.samplers.dpm_solver import dpm_solver
from gl_jax.samplers.dpm_solver_multistep import dpm_solver_multistep, multistep_orders
from gl_jax.sde import VPSDE, DiscreteDDPM
from tests.conftest import REPO

# name -> (options, expected global order). The reference implementation's third-order update takes half
# the second-difference term, so it is of order 2; with the Taylor coefficient it is of order 3.
METHODS = {
    "order_2": ({"order": 2}, 2.0),
    "order_3": ({"order": 3}, 2.0),
    "order_3_taylor": ({"order": 3, "variant_3m": "taylor"}, 3.0),
}
CONVERGENCE_STEPS = (64, 256)

# In a float64 subprocess (x64 must not leak into the other tests). Data N(m, diag(s^2)): the flow of the
# probability-flow ODE keeps z = (x_t - alpha_t m) / sqrt(alpha_t^2 s^2 + sigma_t^2) constant, which gives
# the exact endpoint. The median over points of the endpoint error, at two step counts a factor 4 apart.
CONVERGENCE_SCRIPT = r"""
import json, sys
import jax
import jax.numpy as jnp
import numpy as np
from gl_jax.analytic import gaussian
from gl_jax.sde import VPSDE

assert jax.config.jax_enable_x64
sampler_module, sampler_name, methods, steps_list = json.loads(sys.argv[1])
sampler = getattr(__import__(sampler_module, fromlist=[sampler_name]), sampler_name)
sde = VPSDE()
mean, std = np.array([1.0, -0.5, 0.3]), np.array([0.1, 0.5, 1.5])
score = gaussian(mean, std).score_fn(sde)
x_init = jax.random.normal(jax.random.key(0), (64, 3), jnp.float64)
ends = jnp.array([sde.T, sde.t_min], jnp.float64)
alpha, sigma = np.asarray(sde.alpha(ends)), np.asarray(sde.sigma(ends))
scale = np.sqrt(alpha[:, None] ** 2 * std**2 + sigma[:, None] ** 2)  # [2, D]
exact = alpha[1] * mean + scale[1] * (np.asarray(x_init) - alpha[0] * mean) / scale[0]
errors = {}
for name, opts in methods.items():
    errors[name] = []
    for steps in steps_list:
        run = lambda x: sampler(jax.random.key(0), score, sde, x.shape, steps=steps, x_init=x, **opts)
        x = np.asarray(jax.jit(run)(x_init).x)
        assert x.dtype == np.float64
        errors[name].append(float(np.median(np.linalg.norm(x - exact, axis=-1))))
print("RESULT" + json.dumps(errors))
"""


def convergence_errors(sampler_module, sampler_name, methods, steps):
    """{name: [median endpoint error at each steps]} from `CONVERGENCE_SCRIPT` in float64."""
    # Little XLA optimisation: compiling the small programs dominates the run time.
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    env = dict(os.environ, JAX_ENABLE_X64="1", XLA_FLAGS=flags)
    arg = json.dumps([sampler_module, sampler_name, methods, list(steps)])
    proc = subprocess.run(
        [sys.executable, "-c", CONVERGENCE_SCRIPT, arg], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def slope(errors, steps):
    """Least-squares convergence order: minus the slope of log(error) against log(steps)."""
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.fixture(scope="module")
def errors():
    methods = {name: opts for name, (opts, _) in METHODS.items()}
    return convergence_errors(
        "gl_jax.samplers.dpm_solver_multistep", "dpm_solver_multistep", methods, CONVERGENCE_STEPS
    )


@pytest.mark.parametrize("method", list(METHODS))
def test_convergence_order(errors, method):
    """Orders 2, 2 and 3 (measured 2.00, 2.01 and 3.6: on this linear problem the Taylor variant's
    error constant falls faster than h^3 up to 256 steps). The first steps' lower orders (warm-up) are
    taken at high noise where eps_hat barely moves, so they do not show at these step counts."""
    order = slope(errors[method], CONVERGENCE_STEPS)
    expected = METHODS[method][1]
    assert expected - 0.2 < order < expected + 0.8, (method, errors[method], order)
    if expected == 2.0:
        assert abs(order - 2.0) < 0.2, (method, errors[method], order)


def test_taylor_third_order_beats_second_order(errors):
    assert np.all(np.array(errors["order_3_taylor"]) < 0.1 * np.array(errors["order_2"]))


def _diffusers_run(order, steps, lower_order_final, x_init, eps_fn, sde):
    """diffusers' DPMSolverMultistepScheduler (algorithm_type "dpmsolver", the "midpoint" second-order form)
    on DDPM's linear betas, the model being `eps_fn` at the times t = (n + 1) / N of its timesteps n."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=sde.num_steps,
        beta_start=sde.beta_start,
        beta_end=sde.beta_end,
        beta_schedule="linear",
        solver_order=order,
        algorithm_type="dpmsolver",
        solver_type="midpoint",
        lower_order_final=lower_order_final,
        final_sigmas_type="sigma_min",
        prediction_type="epsilon",
    )
    timesteps = np.linspace(sde.num_steps - 1, 10, steps).round().astype(int)
    sched.set_timesteps(timesteps=list(timesteps))
    x = torch.tensor(np.asarray(x_init))
    for n in sched.timesteps:
        t = jnp.full((x.shape[0],), (int(n) + 1) / sde.num_steps)
        eps = torch.tensor(np.asarray(eps_fn(jnp.asarray(x.numpy()), t)))
        x = sched.step(eps, n, x).prev_sample
    # The same times for gl_jax: the timesteps, then diffusers' last sigma, which is that of n = 0 (t_min).
    grid = jnp.asarray(np.append((timesteps + 1) / sde.num_steps, sde.t_min))
    return x.numpy(), grid


@pytest.mark.slow  # Importing diffusers alone takes 10-15 s on 2 busy cores.
@pytest.mark.parametrize(
    "order, steps, lower_order_final",
    [(2, 12, False), (3, 12, False), (3, 8, True)],
)
def test_matches_diffusers(order, steps, lower_order_final):
    """Same updates as diffusers' scheduler on its own time steps, warm-up and lower-order final steps
    included (diffusers lowers the final orders below 15 steps, the reference implementation below 10:
    the cases are chosen where both agree). Both in float32; the mixture's exact eps is the model."""
    sde = DiscreteDDPM()
    gmm = ring_mixture()
    x_init = jax.random.normal(jax.random.key(0), (32, 2))
    theirs, grid = _diffusers_run(order, steps, lower_order_final, x_init, gmm.eps_fn(sde), sde)
    ours = dpm_solver_multistep(
        jax.random.key(0),
        gmm.score_fn(sde),
        sde,
        x_init.shape,
        steps=steps,
        order=order,
        lower_order_final=lower_order_final,
        x_init=x_init,
        grid=grid,
    ).x
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-4)
    assert float(jnp.abs(ours).max()) > 1.0  # Samples on the ring (radius 2), not a trivial output.


def test_order_one_is_ddim():
    """Order 1 is DPM-Solver-1 = DDIM: equal to the singlestep solver's order 1 on the same grid."""
    gmm, sde = ring_mixture(), VPSDE()
    x_init = jax.random.normal(jax.random.key(0), (16, 2))
    run = lambda sampler, **kw: (
        sampler(jax.random.key(0), gmm.score_fn(sde), sde, (16, 2), steps=7, x_init=x_init, **kw).x
    )
    np.testing.assert_allclose(run(dpm_solver_multistep, order=1), run(dpm_solver, order=1), atol=1e-5)
    assert not np.allclose(run(dpm_solver_multistep, order=2), run(dpm_solver, order=1), atol=1e-3)


def test_step_orders():
    """Warm-up orders 1, 2, ...; with lower_order_final and fewer than 10 steps, the last ones descend."""
    np.testing.assert_array_equal(multistep_orders(6, 3, lower_order_final=True), [1, 2, 3, 3, 2, 1])
    np.testing.assert_array_equal(multistep_orders(6, 3, lower_order_final=False), [1, 2, 3, 3, 3, 3])
    np.testing.assert_array_equal(multistep_orders(4, 2, lower_order_final=True), [1, 2, 2, 1])
    np.testing.assert_array_equal(multistep_orders(10, 3, lower_order_final=True), [1, 2] + [3] * 8)
    np.testing.assert_array_equal(multistep_orders(2, 3, lower_order_final=True), [1, 1])


@pytest.mark.parametrize("order, steps", [(3, 6), (3, 2), (1, 3)])
def test_nfe_counts_model_calls(order, steps):
    """nfe = steps, the number of model evaluations actually executed, also below the warm-up length."""
    calls = []
    score = ring_mixture().score_fn(VPSDE())

    def counting_score(x, t):
        jax.debug.callback(lambda: calls.append(1))  # Once per execution, also inside `lax.scan`.
        return score(x, t)

    result = dpm_solver_multistep(
        jax.random.key(0), counting_score, VPSDE(), (8, 2), steps=steps, order=order
    )
    jax.effects_barrier()
    assert result.nfe.shape == () and jnp.issubdtype(result.nfe.dtype, jnp.integer)
    assert int(result.nfe) == steps == len(calls)
    assert np.all(np.isfinite(result.x))


def test_jit_and_vmap_over_keys():
    score, sde = ring_mixture().score_fn(VPSDE()), VPSDE()
    keys = jax.random.split(jax.random.key(0), 3)
    sample = lambda k: dpm_solver_multistep(k, score, sde, (16, 2), steps=6, order=3)
    batched = jax.jit(jax.vmap(sample))(keys)
    assert batched.x.shape == (3, 16, 2) and batched.nfe.shape == (3,)
    np.testing.assert_allclose(batched.x[1], sample(keys[1]).x, rtol=1e-5, atol=1e-5)
    assert not np.allclose(batched.x[0], batched.x[1])


def test_bad_arguments_raise():
    score, sde = ring_mixture().score_fn(VPSDE()), VPSDE()
    call = lambda **kw: dpm_solver_multistep(jax.random.key(0), score, sde, (4, 2), steps=3, **kw)
    for order in (0, 4):
        with pytest.raises(ValueError, match=r"\(1, 2, 3\)"):
            call(order=order)
    with pytest.raises(ValueError, match="variant_3m"):
        call(order=3, variant_3m="exact")
