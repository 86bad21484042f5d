"""iPNDM: the Adams-Bashforth weights, convergence order on Gaussian data against the exact solution, an
independent loop of the uniform-weight method, k-diffusion's variable-step linear multistep sampler, nfe,
jit and vmap."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.analytic import random_mixture
from gl_jax.data.toy import ring_mixture
from gl_jax.samplers.base import time_grid
from gl_jax.samplers.ipndm import UNIFORM_WEIGHTS, adams_bashforth_weights, ipndm
from gl_jax.sde import EDMSDE, VPSDE
from tests.samplers.test_dpm_solver_multistep import convergence_errors, slope

# name -> (options, expected global order, tolerance). The uniform (iPNDM) weights are of order 4 only on
# a grid uniform in rho; on the Karras and log-SNR grids their local error is O(h^3), so order 2.
METHODS = {
    "uniform_weights_karras": ({}, 2.0, 0.2),
    "uniform_weights_logsnr": ({"grid": "logsnr"}, 2.0, 0.2),
    "variable_step_karras": ({"variable_step": True}, 4.0, 0.4),
    "variable_step_logsnr": ({"variable_step": True, "grid": "logsnr"}, 4.0, 0.4),
}
CONVERGENCE_STEPS = (64, 256)


@pytest.fixture(scope="module")
def errors():
    methods = {name: opts for name, (opts, _, _) in METHODS.items()}
    return convergence_errors("gl_jax.samplers.ipndm", "ipndm", methods, CONVERGENCE_STEPS)


@pytest.mark.parametrize("method", list(METHODS))
def test_convergence_order(errors, method):
    """Measured 2.02, 2.01, 3.77, 3.74 on N(m, diag(s^2)) data (VP process, float64). The first-order
    first step (warm-up) would eventually cap every variant at order 2, but it is taken at high noise
    where eps_hat barely moves, so it does not show at these step counts."""
    _, expected, tol = METHODS[method]
    order = slope(errors[method], CONVERGENCE_STEPS)
    assert abs(order - expected) < tol, (method, errors[method], order)


def test_adams_bashforth_weights():
    """The Vandermonde solve gives the classical coefficients on a uniform grid, integrates cubics exactly
    on an irregular one."""
    for k in range(1, 5):
        w = adams_bashforth_weights(-jnp.arange(4.0), k)
        np.testing.assert_allclose(w, UNIFORM_WEIGHTS[k - 1, :k], rtol=1e-6, atol=1e-6)
    nodes = jnp.array([0.0, -0.7, -1.9, -2.4])
    w = adams_bashforth_weights(nodes, 4)
    for n in range(4):
        np.testing.assert_allclose(jnp.sum(w * nodes**n), 1.0 / (n + 1), rtol=1e-5)


def test_uniform_weights_equal_variable_step_on_a_grid_uniform_in_rho():
    """On EDM (rho = sigma = t) with a uniform grid the two weightings are the same method."""
    gmm, sde = ring_mixture(), EDMSDE(sigma_min=0.2, sigma_max=5.0)
    x_init = 5.0 * jax.random.normal(jax.random.key(0), (16, 2))
    run = lambda **kw: (
        ipndm(
            jax.random.key(0), gmm.score_fn(sde), sde, (16, 2), steps=12, grid="uniform", x_init=x_init, **kw
        ).x
    )
    np.testing.assert_allclose(run(), run(variable_step=True), rtol=1e-5, atol=1e-5)


def _denoiser_loop(denoise, x, sigmas, weights_fn, max_order=4):
    """An independent NumPy loop of a linear multistep method on dx/dsigma = (x - D(x; sigma)) / sigma."""
    ds = []
    for i in range(len(sigmas) - 1):
        ds.insert(0, (x - denoise(x, sigmas[i])) / sigmas[i])  # Newest first.
        ds = ds[:max_order]
        w = weights_fn(i, min(i + 1, max_order))
        x = x + sum(wj * dj for wj, dj in zip(w, ds, strict=True))
    return x


def test_matches_independent_uniform_weight_loop():
    """k-diffusion's sample_ipndm (not in the installed version) written out: EDM, Karras sigmas, Euler
    first, then the Adams-Bashforth weights 3/2, -1/2; 23/12, -16/12, 5/12; 55/24, -59/24, 37/24, -9/24
    times the step in sigma."""
    gmm, sde = random_mixture(4, seed=2), EDMSDE()
    x_init = sde.T * jax.random.normal(jax.random.key(1), (32, 4))
    sigmas = np.asarray(time_grid(sde, 9, grid="karras"), np.float64)
    table = {
        1: [1.0],
        2: [1.5, -0.5],
        3: [23 / 12, -16 / 12, 5 / 12],
        4: [55 / 24, -59 / 24, 37 / 24, -9 / 24],
    }
    denoiser = gmm.denoiser_fn(sde)
    denoise = lambda x, s: np.asarray(denoiser(jnp.asarray(x, jnp.float32), jnp.full((x.shape[0],), s)))
    weights = lambda i, k: [c * (sigmas[i + 1] - sigmas[i]) for c in table[k]]
    expected = _denoiser_loop(denoise, np.asarray(x_init, np.float64), sigmas, weights)
    ours = ipndm(jax.random.key(0), gmm.score_fn(sde), sde, x_init.shape, steps=9, x_init=x_init).x
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    assert float(jnp.abs(ours).max()) > 1.0


def test_variable_step_matches_k_diffusion_lms():
    """The variable-step weights on EDM are k-diffusion's sample_lms (order 4), which integrates the
    Lagrange polynomial through the past derivatives by quadrature."""
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("k_diffusion") is None:
        pytest.skip("needs k-diffusion (pip install --no-deps k-diffusion)")
    from benchmarks._peers import load_k_diffusion_sampling

    k = load_k_diffusion_sampling()
    gmm, sde = random_mixture(4, seed=2), EDMSDE()
    x_init = sde.T * jax.random.normal(jax.random.key(1), (32, 4))
    sigmas = time_grid(sde, 9, grid="karras")
    denoiser = gmm.denoiser_fn(sde)

    def model(x, sigma):
        out = denoiser(jnp.asarray(x.numpy()), jnp.asarray(sigma.numpy()))
        return torch.tensor(np.asarray(out))

    theirs = k.sample_lms(
        model, torch.tensor(np.asarray(x_init)), torch.tensor(np.asarray(sigmas)), disable=True
    )
    ours = ipndm(
        jax.random.key(0), gmm.score_fn(sde), sde, x_init.shape, steps=9, x_init=x_init, variable_step=True
    ).x
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "max_order, steps, variable_step", [(4, 6, False), (4, 6, True), (4, 2, True), (1, 1, False)]
)
def test_nfe_counts_model_calls(max_order, steps, variable_step):
    """nfe = steps, the model evaluations actually executed, also below the warm-up length."""
    calls = []
    score = ring_mixture().score_fn(VPSDE())

    def counting_score(x, t):
        jax.debug.callback(lambda: calls.append(1))  # Once per execution, also inside `lax.scan`.
        return score(x, t)

    result = ipndm(
        jax.random.key(0),
        counting_score,
        VPSDE(),
        (8, 2),
        steps=steps,
        max_order=max_order,
        variable_step=variable_step,
    )
    jax.effects_barrier()
    assert int(result.nfe) == steps == len(calls)
    assert np.all(np.isfinite(result.x))


def test_jit_and_vmap_over_keys():
    score, sde = ring_mixture().score_fn(VPSDE()), VPSDE()
    keys = jax.random.split(jax.random.key(0), 3)
    sample = lambda k: ipndm(k, score, sde, (16, 2), steps=6, variable_step=True)
    batched = jax.jit(jax.vmap(sample))(keys)
    assert batched.x.shape == (3, 16, 2) and batched.nfe.shape == (3,)
    np.testing.assert_allclose(batched.x[1], sample(keys[1]).x, rtol=1e-5, atol=1e-5)
    assert not np.allclose(batched.x[0], batched.x[1])


def test_image_shaped_data():
    """`[B, H, W, C]` states: N(0, s^2) data, whose flow is x_t = x_T sqrt(alpha_t^2 s^2 + sigma_t^2) /
    sqrt(alpha_T^2 s^2 + sigma_T^2)."""
    sde, s = VPSDE(), 0.5

    def score(x, t):
        return -x / (sde.alpha(t) ** 2 * s**2 + sde.sigma(t) ** 2)[:, None, None, None]

    x_init = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
    ends = jnp.array([sde.T, sde.t_min])
    std = jnp.sqrt(sde.alpha(ends) ** 2 * s**2 + sde.sigma(ends) ** 2)
    # 40 steps: the noise prediction of a broad Gaussian varies fast near the data (20 steps: off by 0.02).
    x = ipndm(jax.random.key(0), score, sde, x_init.shape, steps=40, x_init=x_init).x
    assert x.shape == x_init.shape
    np.testing.assert_allclose(x, x_init * std[1] / std[0], atol=6e-3)


def test_bad_arguments_raise():
    score, sde = ring_mixture().score_fn(VPSDE()), VPSDE()
    for max_order in (0, 5):
        with pytest.raises(ValueError, match=r"\(1, 2, 3, 4\)"):
            ipndm(jax.random.key(0), score, sde, (4, 2), steps=3, max_order=max_order)
