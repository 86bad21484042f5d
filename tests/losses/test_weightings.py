"""Loss weightings as functions of log-SNR (Kingma & Gao 2023) and EDM2's learned uncertainty weighting."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gl_jax.losses.score import denoising_score_matching, uncertainty_weighted_score_matching
from gl_jax.losses.weightings import (
    WEIGHTINGS,
    EDMWeighting,
    FlowMatchingWeighting,
    LogSNRWeighting,
    MinSNRWeighting,
    SigmoidWeighting,
    UncertaintyWeight,
    log_snr_rate,
    uniform_log_snr_density,
)
from gl_jax.parametrization import convert, from_eps
from gl_jax.sde import EDMSDE, VESDE, VPSDE, RectifiedFlow

NAMES = ["sigma2", "likelihood", "elbo", "edm", "min_snr", "sigmoid", "flow_matching"]
PROCESSES = {"vp": VPSDE(), "ve": VESDE(), "rf": RectifiedFlow(), "edm": EDMSDE()}


@pytest.mark.parametrize("sde", list(PROCESSES.values()), ids=list(PROCESSES))
def test_log_snr_rate_is_minus_the_derivative_of_the_log_snr(sde):
    t = jnp.linspace(sde.t_min + 0.01 * (sde.T - sde.t_min), sde.T * 0.99, 7)
    _, dlam = jax.jvp(sde.log_snr, (t,), (jnp.ones_like(t),))
    np.testing.assert_allclose(log_snr_rate(sde, t), -dlam, rtol=2e-4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sde", list(PROCESSES.values()), ids=list(PROCESSES))
def test_factor_under_uniform_times_is_w_of_lambda_times_the_rate(sde, name):
    # Kingma & Gao 2023, eq. 5 with t ~ U: the factor on || eps_hat - eps ||^2 is w(lambda) abs(d lambda/dt)
    # (T - t_min), with w = p(lambda) f(lambda) for the per-example weightings. The fixed weightings drop
    # the constant T - t_min (module docstring), so their factor is w(lambda) abs(d lambda/dt).
    weighting = WEIGHTINGS[name]()
    t = jnp.linspace(sde.t_min + 0.01 * (sde.T - sde.t_min), sde.T * 0.99, 9)
    lam = sde.log_snr(t)
    w = weighting.w(lam, uniform_log_snr_density(sde, t))
    constant = 1.0 if isinstance(weighting, LogSNRWeighting) else sde.T - sde.t_min
    np.testing.assert_allclose(weighting(sde, t), w * log_snr_rate(sde, t) * constant, rtol=1e-4)


def test_each_weighting_in_closed_form():
    lam = jnp.linspace(-8.0, 8.0, 17)
    snr = jnp.exp(lam)
    density = jnp.full_like(lam, 0.1)  # Any density: the fixed weightings ignore it.
    np.testing.assert_allclose(WEIGHTINGS["elbo"]().w(lam, density), 1.0)
    np.testing.assert_allclose(
        SigmoidWeighting(bias=1.5).w(lam, density), 1 / (1 + np.exp(lam - 1.5)), rtol=1e-6
    )
    np.testing.assert_allclose(FlowMatchingWeighting().w(lam, density), 0.5 / np.sqrt(snr), rtol=1e-6)
    np.testing.assert_allclose(
        MinSNRWeighting(gamma=5.0).w(lam, density), 0.1 * np.minimum(snr, 5) / snr, rtol=1e-6
    )
    # EDM (Karras et al. 2022, table 1): lambda(s) = (s^2 + s_d^2) / (s s_d)^2 on || D - x0 ||^2, s^2 = 1/SNR,
    # and || D - x0 ||^2 = s^2 || eps_hat - eps ||^2.
    s2 = 1 / snr
    np.testing.assert_allclose(
        EDMWeighting(sigma_data=0.5).factor(lam), (s2 + 0.25) / (s2 * 0.25) * s2, rtol=1e-6
    )
    assert isinstance(FlowMatchingWeighting(), LogSNRWeighting) and not isinstance(
        MinSNRWeighting(), LogSNRWeighting
    )


def test_min_snr_is_the_same_loss_on_eps_x0_and_v():
    # Hang et al. 2023: min(SNR, g) / SNR on eps, min(SNR, g) on x0, and on a VP process
    # min(SNR, g) / (SNR + 1) on v (the corrected form of diffusers #5654).
    sde, gamma = VPSDE(), 5.0
    t = jnp.linspace(0.02, 0.98, 11)
    alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    snr = np.asarray(jnp.exp(sde.log_snr(t)))
    x0, eps, eps_hat = (jax.random.normal(k, (11, 6)) for k in jax.random.split(jax.random.key(0), 3))
    x_t = alpha * x0 + sigma * eps
    sq = lambda a, b: np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=-1)
    on_eps = np.asarray(MinSNRWeighting(gamma=gamma)(sde, t)) * sq(eps_hat, eps)
    x0_hat = convert(eps_hat, source="eps", target="x0", x_t=x_t, alpha=alpha, sigma=sigma)
    v, v_hat = (from_eps(e, "v", x_t, alpha, sigma) for e in (eps, eps_hat))
    np.testing.assert_allclose(on_eps, np.minimum(snr, gamma) * sq(x0_hat, x0), rtol=1e-4)
    np.testing.assert_allclose(on_eps, np.minimum(snr, gamma) / (snr + 1) * sq(v_hat, v), rtol=1e-4)


def test_flow_matching_weighting_is_the_velocity_loss_on_rectified_flow():
    sde = RectifiedFlow()
    t = jnp.linspace(0.05, 0.95, 10)
    alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    x0, eps, eps_hat = (jax.random.normal(k, (10, 4)) for k in jax.random.split(jax.random.key(1), 3))
    x_t = alpha * x0 + sigma * eps
    x0_hat = convert(eps_hat, source="eps", target="x0", x_t=x_t, alpha=alpha, sigma=sigma)
    velocity = np.sum(((eps_hat - x0_hat) - (eps - x0)) ** 2, axis=-1)  # u = eps - x0 (Liu et al. 2023).
    on_eps = FlowMatchingWeighting()(sde, t) * np.sum((eps_hat - eps) ** 2, axis=-1)
    np.testing.assert_allclose(on_eps, velocity, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_is_the_same_for_eps_x0_and_v_networks_of_one_function(name):
    # One network function, wrapped to predict eps, x0 or v: the loss and its gradient do not depend on the
    # wrapping (the loss is taken on eps after conversion), to 1e-6 in float64.
    with jax.enable_x64(True):
        sde = VPSDE()
        x0 = jax.random.normal(jax.random.key(2), (16, 3), jnp.float64)
        params = {
            "w": 0.3 * jax.random.normal(jax.random.key(3), (3, 3), jnp.float64),
            "b": jnp.zeros(3, jnp.float64),
        }

        def eps_net(p, x_t, t):
            return jnp.tanh(x_t @ p["w"] + p["b"] + t[:, None])

        def loss(p, prediction):
            def model(x_t, t):
                a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
                return from_eps(eps_net(p, x_t, t), prediction, x_t, a, s)

            return denoising_score_matching(
                jax.random.key(4), model, sde, x0, weighting=WEIGHTINGS[name](), prediction=prediction
            )[0]

        grads = {p: jax.grad(loss)(params, p) for p in ("eps", "x0", "v", "score")}
        for p in ("x0", "v", "score"):
            for leaf, ref in zip(jax.tree.leaves(grads[p]), jax.tree.leaves(grads["eps"]), strict=True):
                np.testing.assert_allclose(leaf, ref, rtol=1e-6, atol=1e-12)


def test_uncertainty_weighting_divides_by_e_to_the_u_and_adds_u():
    sde = VPSDE()
    x0 = jax.random.normal(jax.random.key(5), (32, 4))
    model = lambda x_t, t: 0.5 * x_t
    key = jax.random.key(6)
    plain, _ = denoising_score_matching(key, model, sde, x0, prediction="eps")
    c = 0.7
    loss, metrics = uncertainty_weighted_score_matching(
        key, model, lambda lam: jnp.full_like(lam, c), sde, x0, prediction="eps"
    )
    np.testing.assert_allclose(loss, plain * np.exp(-c) + c, rtol=1e-6)
    np.testing.assert_allclose(metrics["weighted_loss"], plain, rtol=1e-6)
    # The minimiser over a constant u is log of the mean loss: the derivative vanishes there.
    grad_u = jax.grad(
        lambda u: uncertainty_weighted_score_matching(
            key, model, lambda lam: jnp.full_like(lam, u), sde, x0, prediction="eps"
        )[0]
    )
    assert abs(float(grad_u(jnp.log(plain)))) < 1e-5


def test_uncertainty_network_starts_at_zero_and_learns_the_loss_level():
    net = UncertaintyWeight(features=32)
    lam = jnp.linspace(-10.0, 10.0, 64)
    params = net.init(jax.random.key(0), lam)["params"]
    np.testing.assert_array_equal(net.apply({"params": params}, lam), 0.0)  # e^u = 1: the unweighted loss.
    # Per-level losses l(lambda) = exp(sin(lambda / 3)): minimising mean(l e^-u + u) drives u to log l.
    target = jnp.exp(jnp.sin(lam / 3.0))

    def objective(p):
        u = net.apply({"params": p}, lam)
        return jnp.mean(target * jnp.exp(-u) + u)

    opt = optax.adam(0.03)

    def step(carry, _):
        p, state = carry
        updates, state = opt.update(jax.grad(objective)(p), state)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=1000))((params, opt.init(params)))
    np.testing.assert_allclose(net.apply({"params": params}, lam), jnp.log(target), atol=0.05)
