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

import argparse
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

from benchmarks import _timing
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


def eval_in_loop(fn: Callable, x: jax.Array, t: jax.Array, *, count: int = 50) -> Callable[[], float]:
    """A callable timing one evaluation of `fn(x, t) -> (dx, div)` as a compiled solver loop pays it.

    `count` evaluations chained in one `lax.fori_loop` (each input depends on the previous output, so XLA
    cannot hoist the work out of the loop), timed as a whole and divided by `count`: no dispatch, no host
    round trip, which a call of the jitted function alone would add to every evaluation.
    """

    def body(_, state):
        x, acc = state
        dx, div = fn(x, t)
        return x + 1e-6 * dx, acc + div

    loop = jax.jit(lambda x: jax.lax.fori_loop(0, count, body, (x, jnp.zeros(x.shape[:1], x.dtype))))
    loop(x)  # Compiles.

    def timed() -> float:
        start = time.perf_counter()
        jax.block_until_ready(loop(x))
        return (time.perf_counter() - start) / count

    return timed


def bench_case(name: str, shape: tuple[int, ...], *, repeats: int) -> list[tuple]:
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
    results = {}

    # gl_jax: one jit, diffrax Dopri5.
    ours = jax.jit(lambda key, x: ode_log_likelihood(key, score, SDE, x, rtol=RTOL, atol=ATOL))

    def run_ours():
        results["ours"] = jax.block_until_ready(ours(key, xj))

    # One drift evaluation with its Jacobian-vector product: what every solver step evaluates.
    probes = draw_probes(key, shape)
    drift = probability_flow_drift(score, SDE)
    augmented = lambda x, t: hutchinson_divergence(lambda y: drift(y, t), x, probes)
    one_eval = jax.jit(augmented)
    tb = jnp.full((shape[0],), 1.0)
    ours_eval = eval_in_loop(augmented, xj, tb)

    # scipy RK45 on the host, calling a jitted drift + divergence each evaluation (score_sde's approach).
    def run_scipy():
        b = shape[0]

        def ode_func(t, y):
            xs = jnp.asarray(y[:-b].reshape(shape), jnp.float32)
            dx, div = one_eval(xs, jnp.full((b,), t, jnp.float32))
            return np.concatenate([np.asarray(dx, np.float64).ravel(), np.asarray(div, np.float64)])

        y0 = np.concatenate([x.ravel().astype(np.float64), np.zeros(b)])
        sol = integrate.solve_ivp(ode_func, (SDE.t_min, SDE.T), y0, rtol=RTOL, atol=ATOL, method="RK45")
        z = sol.y[:-b, -1].reshape(shape)
        logp = np.asarray(SDE.prior_logp(jnp.asarray(z, jnp.float32))) + sol.y[-b:, -1]
        results["scipy"] = (sol.nfev, float(np.mean(logp)))

    # torchdiffeq Dopri5 through k-diffusion's log_likelihood, PyTorch at its default threading.
    model = torch_denoiser(gmm, weights)
    xt = torch.tensor(x)

    def run_torch():
        ll, info = k.log_likelihood(model, xt, SDE.sigma_min, SDE.sigma_max, atol=ATOL, rtol=RTOL)
        results["torch"] = (info["fevals"], float(ll.mean()))

    # One evaluation of k-diffusion's augmented ODE function alone: the denoiser, the ODE derivative and
    # one vector-Jacobian product with a Rademacher probe (torchdiffeq calls it from Python every time).
    sigma = torch.full((shape[0],), 1.0)

    def torch_eval():
        with torch.enable_grad():
            xg = xt.detach().requires_grad_()
            d = (xg - model(xg, sigma)) / sigma.reshape(-1, *[1] * (xg.ndim - 1))
            v = torch.randint_like(xg, 2) * 2 - 1
            grad = torch.autograd.grad((d * v).sum(), xg)[0]
            return d.detach(), (v * grad).flatten(1).sum(1)

    walls = _timing.interleave({"ours": run_ours, "scipy": run_scipy, "torch": run_torch}, repeats=repeats)
    evals = _timing.interleave({"ours": ours_eval, "torch": torch_eval}, repeats=4 * repeats)
    res, (nfe_scipy, logp_scipy), (nfe_torch, logp_torch) = (results[k] for k in ("ours", "scipy", "torch"))
    logp_ours = float(jnp.mean(res.logp))
    rows = [
        ("gl_jax (jit + diffrax Dopri5)", walls["ours"], int(res.nfe), evals["ours"], logp_ours),
        ("scipy RK45 host loop", walls["scipy"], nfe_scipy, evals["ours"], logp_scipy),
        ("torchdiffeq Dopri5 (k-diffusion)", walls["torch"], nfe_torch, evals["torch"], logp_torch),
    ]
    return [(name, *row) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs per implementation (median).")
    args = parser.parse_args()
    machine = _timing.Machine()
    rows = bench_case("D = 64, batch 256", (256, 64), repeats=args.repeats)
    rows += bench_case("image 16x16x3, batch 64", (64, 16, 16, 3), repeats=args.repeats)
    machine.stop()
    print(
        f"rtol = atol = {RTOL}; {args.repeats} interleaved runs each after a warm-up (median (min-max)); "
        f"{machine.line()}; {_timing.same_cores_note()}; JAX {jax.__version__}\n"
    )
    header = (
        "case",
        "implementation",
        "wall time (s)",
        "NFE",
        "speed-up of gl_jax",
        "one eval (ms)",
        "time / (NFE x eval)",
        "log p",
    )
    table = []
    for i, (case, impl, wall, nfe, one_eval, logp) in enumerate(rows):
        ours = rows[i - i % 3][2]
        table.append(
            (
                case,
                impl,
                wall.cell(),
                nfe,
                _timing.ratio_cell(ours, wall),
                one_eval.cell(scale=1e3, digits=2),
                f"{wall.median / (nfe * one_eval.median):.2f}",
                f"{logp:.2f}",
            )
        )
    print(_timing.table(header, table))


if __name__ == "__main__":
    main()
