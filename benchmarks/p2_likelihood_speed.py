"""P2: ODE log-likelihood of a batch — gl_jax (one jit, diffrax) vs a host-side scipy RK45 loop (the
score_sde approach) vs torchdiffeq dopri5 (k-diffusion's `log_likelihood`), same model, same tolerances.

The model is the exact score of a Gaussian mixture plus a small random MLP (two hidden layers of 512 SiLU
units; its output through tanh, scaled by 1e-2 / sqrt(1 + sigma^2)) so each evaluation costs what a small
network costs; the same weights are used in JAX and in PyTorch. The process is EDM's (alpha = 1,
sigma = t in [0.002, 80]), which is what k-diffusion's `log_likelihood` integrates. All three use one
Rademacher probe per example; the mean log p column shows that they compute the same quantity.

Columns: wall time (median of 3 runs after compilation/warm-up), NFE, the time of one evaluation of the
augmented vector field measured alone (gl_jax's jitted drift with its Jacobian-vector product, which the
scipy loop calls too; k-diffusion's denoiser with its vector-Jacobian product in PyTorch), and the ratio of
wall time to NFE x that evaluation: 1.0 would mean no solver overhead at all. When every implementation is
near 1.0, the speed-up of gl_jax is bounded by the ratio of the evaluation times: the solver is no longer
where the time goes.

Run (after `make bench-install`):  .venv/bin/python -m benchmarks.p2_likelihood_speed
"""

from __future__ import annotations

import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

from gl_jax.analytic import GaussianMixture, random_mixture
from gl_jax.likelihood import draw_probes, hutchinson_divergence, ode_log_likelihood
from gl_jax.samplers.ode import probability_flow_drift
from gl_jax.sde import EDMSDE

SDE = EDMSDE(sigma_min=0.002, sigma_max=80.0)
RTOL = ATOL = 1e-5
HIDDEN = 512
MLP_SCALE = 1e-2


def mlp_weights(dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.standard_normal((dim, HIDDEN)) / math.sqrt(dim)).astype(np.float32),
        "wt": rng.standard_normal(HIDDEN).astype(np.float32),
        "w2": (rng.standard_normal((HIDDEN, HIDDEN)) / math.sqrt(HIDDEN)).astype(np.float32),
        "w3": (rng.standard_normal((HIDDEN, dim)) / math.sqrt(HIDDEN)).astype(np.float32),
    }


def jax_score(gmm: GaussianMixture, weights: dict, shape: tuple[int, ...]):
    exact = gmm.score_fn(SDE)
    w = {k: jnp.asarray(v) for k, v in weights.items()}

    def score(x, t):
        flat = x.reshape(x.shape[0], -1)
        h = jax.nn.silu(flat @ w["w1"] + jnp.log(t)[:, None] * w["wt"])
        h = jax.nn.silu(h @ w["w2"])
        # A bounded perturbation on the score's scale (~1 / sigma): the ODE stays as tame as the exact one.
        extra = MLP_SCALE * jnp.tanh(h @ w["w3"]) / jnp.sqrt(1.0 + t**2)[:, None]
        return (exact(flat, t) + extra).reshape(x.shape)

    return score


def torch_denoiser(gmm: GaussianMixture, weights: dict):
    """D(x; sigma) = x + sigma^2 score(x, sigma), k-diffusion's model API."""
    import torch

    logw = torch.tensor(np.log(gmm.weights.astype(np.float64)), dtype=torch.float32)
    mu, var0 = torch.tensor(gmm.means), torch.tensor(gmm.stds) ** 2
    w = {k: torch.tensor(v) for k, v in weights.items()}

    def model(x, sigma):
        shape = x.shape
        flat = x.reshape(shape[0], -1)
        var = var0[None] + sigma[:, None, None] ** 2
        diff = flat[:, None, :] - mu[None]
        logits = logw - 0.5 * (diff**2 / var + torch.log(2 * torch.pi * var)).sum(-1)
        score = (torch.softmax(logits, -1)[..., None] * (-diff / var)).sum(1)
        h = torch.nn.functional.silu(flat @ w["w1"] + torch.log(sigma)[:, None] * w["wt"])
        h = torch.nn.functional.silu(h @ w["w2"])
        score = score + MLP_SCALE * torch.tanh(h @ w["w3"]) / torch.sqrt(1.0 + sigma**2)[:, None]
        return (flat + sigma[:, None] ** 2 * score).reshape(shape)

    return model


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    out = fn()  # Warm-up / compilation.
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench_case(name: str, shape: tuple[int, ...]) -> list[tuple]:
    import torch

    from benchmarks._peers import load_k_diffusion_sampling

    k = load_k_diffusion_sampling()
    dim = math.prod(shape[1:])
    gmm = random_mixture(dim, seed=2)
    weights = mlp_weights(dim)
    score = jax_score(gmm, weights, shape)
    x = np.asarray(gmm.sample(jax.random.key(0), shape[0])).reshape(shape)
    xj = jnp.asarray(x)
    key = jax.random.key(1)

    # gl_jax: one jit, diffrax Dopri5.
    ours = jax.jit(lambda key, x: ode_log_likelihood(key, score, SDE, x, rtol=RTOL, atol=ATOL))
    t_ours, res = timed(lambda: jax.block_until_ready(ours(key, xj)))
    nfe_ours, logp_ours = int(res.nfe), float(jnp.mean(res.logp))

    # One drift evaluation with its Jacobian-vector product, alone.
    probes = draw_probes(key, shape)
    drift = probability_flow_drift(score, SDE)
    one_eval = jax.jit(lambda x, t: hutchinson_divergence(lambda y: drift(y, t), x, probes))
    tb = jnp.full((shape[0],), 1.0)
    t_eval, _ = timed(lambda: jax.block_until_ready(one_eval(xj, tb)), repeats=20)

    # scipy RK45 on the host, calling a jitted drift + divergence each evaluation (score_sde's approach).
    def scipy_loglik():
        b = shape[0]

        def ode_func(t, y):
            xs = jnp.asarray(y[:-b].reshape(shape), jnp.float32)
            dx, div = one_eval(xs, jnp.full((b,), t, jnp.float32))
            return np.concatenate([np.asarray(dx, np.float64).ravel(), np.asarray(div, np.float64)])

        y0 = np.concatenate([x.ravel().astype(np.float64), np.zeros(b)])
        sol = integrate.solve_ivp(ode_func, (SDE.t_min, SDE.T), y0, rtol=RTOL, atol=ATOL, method="RK45")
        z = sol.y[:-b, -1].reshape(shape)
        logp = np.asarray(SDE.prior_logp(jnp.asarray(z, jnp.float32))) + sol.y[-b:, -1]
        return sol.nfev, float(np.mean(logp))

    t_scipy, (nfe_scipy, logp_scipy) = timed(scipy_loglik)

    # torchdiffeq Dopri5 through k-diffusion's log_likelihood.
    torch.set_num_threads(2)
    model = torch_denoiser(gmm, weights)
    xt = torch.tensor(x)

    def torch_loglik():
        ll, info = k.log_likelihood(model, xt, SDE.sigma_min, SDE.sigma_max, atol=ATOL, rtol=RTOL)
        return info["fevals"], float(ll.mean())

    t_torch, (nfe_torch, logp_torch) = timed(torch_loglik)

    # One evaluation of k-diffusion's augmented ODE function alone: the denoiser, the ODE derivative and
    # one vector-Jacobian product with a Rademacher probe.
    sigma = torch.full((shape[0],), 1.0)

    def torch_eval():
        with torch.enable_grad():
            xg = xt.detach().requires_grad_()
            d = (xg - model(xg, sigma)) / sigma.reshape(-1, *[1] * (xg.ndim - 1))
            v = torch.randint_like(xg, 2) * 2 - 1
            grad = torch.autograd.grad((d * v).sum(), xg)[0]
            return d.detach(), (v * grad).flatten(1).sum(1)

    t_torch_eval, _ = timed(torch_eval, repeats=20)
    return [
        (name, "gl_jax (jit + diffrax Dopri5)", t_ours, nfe_ours, t_eval, logp_ours),
        (name, "scipy RK45 host loop", t_scipy, nfe_scipy, t_eval, logp_scipy),
        (name, "torchdiffeq Dopri5 (k-diffusion)", t_torch, nfe_torch, t_torch_eval, logp_torch),
    ]


def main() -> None:
    rows = bench_case("D = 64, batch 256", (256, 64)) + bench_case("image 16x16x3, batch 64", (64, 16, 16, 3))
    print(f"rtol = atol = {RTOL}; CPU: {jax.devices()[0].device_kind}, JAX {jax.__version__}\n")
    print(
        "| case | implementation | wall time (s) | NFE | speed-up of gl_jax | one eval (ms) "
        "| time / (NFE x eval) | log p |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for i, (case, impl, secs, nfe, t_eval, logp) in enumerate(rows):
        ours = rows[i - i % 3][2]
        print(
            f"| {case} | {impl} | {secs:.3f} | {nfe} | {secs / ours:.2f}x | {1e3 * t_eval:.2f} "
            f"| {secs / (nfe * t_eval):.2f} | {logp:.2f} |"
        )


if __name__ == "__main__":
    main()
