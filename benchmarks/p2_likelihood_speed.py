"""P2: ODE log-likelihood of a batch — gl_jax (one jit, diffrax) vs a host-side scipy RK45 loop (the
score_sde approach) vs torchdiffeq dopri5 (k-diffusion's `log_likelihood`), same model, same tolerances.

The model is the exact score of a Gaussian mixture plus a small random MLP (two hidden layers of 512 SiLU
units; its output through tanh, scaled by 1e-2 / sqrt(1 + sigma^2)) so each evaluation costs what a small
network costs; the same weights are used in JAX and in PyTorch. The process is EDM's (alpha = 1,
sigma = t in [0.002, 80]), which is what k-diffusion's `log_likelihood` integrates. All three use one
Rademacher probe per example; the mean log p column shows that they compute the same quantity.

Method (`benchmarks/_timing.py`): the three solves and, for gl_jax and PyTorch, NFE evaluations of the
augmented vector field run back to back (gl_jax's in one compiled `fori_loop`, so no dispatch per
evaluation; PyTorch's in a Python loop, as torchdiffeq calls them) are interleaved for `--repeats` rounds;
medians with their min-max range. Columns: wall time, NFE, the speed-up of gl_jax (ratio of medians, with
the ratio of the extremes), one evaluation (the back-to-back time / NFE; the scipy row calls gl_jax's
jitted evaluation), and the overhead wall time / (NFE x one evaluation): 1.0 means the solver costs
nothing beyond its evaluations. PyTorch runs at its default threading, on the same cores as XLA.

`--loop-variants` times the diffrax settings that could cost per step (the checkpointed loop `max_steps`
selects, the final error check) against the same evaluations: see LOOP_VARIANTS.

Recorded (2026-12-03, 2 cores, quiet: load 0.47 and 0.49 at the start, two consecutive runs, 5 rounds):

  | case | gl_jax s | vs scipy host loop | vs torchdiffeq | gl_jax overhead | torchdiffeq overhead |
  |---|---|---|---|---|---|
  | D = 64, batch 256 | 0.513 / 0.355 | 2.23x / 2.27x | 1.95x / 1.77x | 1.01 / 1.03 | 1.42 / 1.14 |
  | image 16x16x3, batch 64 | 0.408 / 0.309 | 2.54x / 2.53x | 2.33x / 2.55x | 0.97 / 0.93 | 1.03 / 1.19 |

The ratios repeat (each within the other run's printed range); the absolute times do not: the machine
itself ran ~1.4x slower during the first run (gl_jax's evaluation 3.99 against 2.70 ms, PyTorch's 5.26
against 3.96, all implementations alike), which is why the ratios, not the seconds, are the headline.
gl_jax's solver costs nothing measurable beyond its evaluations (overhead 0.93-1.03): the 1.2-1.6 read
before came from timing one evaluation as a separate dispatched call and from timing the implementations
one after the other, not interleaved. `--loop-variants` (same day): the overhead with gl_jax's settings
is 1.08 / 0.93 (D = 64 / image), with a plain `lax.while_loop` (max_steps=None) 1.06 / 0.91, without the
error check 1.05 / 0.92, with neither 0.99 / 0.91: every difference is inside the runs' ranges, so
gl_jax keeps `max_steps` (a runaway solve stops with a clear error instead of looping forever) and the
check. Where the rest of the speed-up over torchdiffeq comes from is the evaluation itself (XLA's fused
forward-mode JVP against PyTorch's autograd VJP, 1.3-1.8x) and the Python loop torchdiffeq pays per step.

Run (after `make bench-install`):  .venv/bin/python -m benchmarks.p2_likelihood_speed
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

from benchmarks import _timing
from gl_jax.analytic import GaussianMixture, random_mixture
from gl_jax.likelihood import draw_probes, hutchinson_divergence, ode_log_likelihood
from gl_jax.samplers.ode import FIRST_STEP_FRACTION, adaptive_nfe, probability_flow_drift
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


def evals_in_loop(fn: Callable, x: jax.Array, t: jax.Array, *, count: int) -> Callable[[], None]:
    """A callable that runs `count` evaluations of `fn(x, t) -> (dx, div)` as a compiled solver loop does.

    They are chained in one `lax.fori_loop` (each input depends on the previous output, so XLA cannot hoist
    the work out of the loop): no dispatch or host round trip per evaluation, which a call of the jitted
    function alone would add. With `count` = a solve's NFE, solve time / this time is the solver's overhead.
    """

    def body(_, state):
        x, acc = state
        dx, div = fn(x, t)
        return x + 1e-6 * dx, acc + div

    loop = jax.jit(lambda x: jax.lax.fori_loop(0, count, body, (x, jnp.zeros(x.shape[:1], x.dtype))))
    loop(x)  # Compiles.
    return lambda: jax.block_until_ready(loop(x))


def problem(shape: tuple[int, ...]):
    """The case's data and model: `(gmm, weights, score, x [numpy], augmented, key)`.

    `augmented(x, t) -> (dx/dt, divergence estimate)` is one drift evaluation with its Jacobian-vector
    product on the probes `ode_log_likelihood` draws from `key`: what every solver step evaluates.
    """
    dim = math.prod(shape[1:])
    gmm = random_mixture(dim, seed=2)
    weights = mlp_weights(dim)
    score = jax_score(gmm, weights, shape)
    x = np.asarray(gmm.sample(jax.random.key(0), shape[0])).reshape(shape)
    key = jax.random.key(1)
    probes = draw_probes(key, shape)
    drift = probability_flow_drift(score, SDE)
    augmented = lambda x, t: hutchinson_divergence(lambda y: drift(y, t), x, probes)
    return gmm, weights, score, x, augmented, key


def bench_case(name: str, shape: tuple[int, ...], *, repeats: int) -> list[tuple]:
    import torch

    from benchmarks._peers import load_k_diffusion_sampling

    k = load_k_diffusion_sampling()
    gmm, weights, score, x, augmented, key = problem(shape)
    xj = jnp.asarray(x)
    results = {}

    # gl_jax: one jit, diffrax Dopri5.
    ours = jax.jit(lambda key, x: ode_log_likelihood(key, score, SDE, x, rtol=RTOL, atol=ATOL))

    def run_ours():
        results["ours"] = jax.block_until_ready(ours(key, xj))

    one_eval = jax.jit(augmented)
    run_ours()  # Compiles; its NFE sizes the loop of evaluations.
    nfe_ours = int(results["ours"].nfe)
    ours_evals = evals_in_loop(augmented, xj, jnp.full((shape[0],), 1.0), count=nfe_ours)

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

    run_torch()
    nfe_torch = results["torch"][0]

    def torch_evals():  # Back to back, as torchdiffeq calls them (PyTorch's threads stay awake).
        for _ in range(nfe_torch):
            torch_eval()

    # Solves and the evaluations they make, timed in the same rounds: the ratio of the two is the overhead.
    fns = {"ours": run_ours, "ours evals": ours_evals, "scipy": run_scipy, "torch": run_torch}
    t = _timing.interleave({**fns, "torch evals": torch_evals}, repeats=repeats, warmup=0)
    res, (nfe_scipy, logp_scipy) = results["ours"], results["scipy"]
    logp_ours, logp_torch = float(jnp.mean(res.logp)), results["torch"][1]
    rows = [
        ("gl_jax (jit + diffrax Dopri5)", t["ours"], nfe_ours, t["ours evals"], nfe_ours, logp_ours),
        ("scipy RK45 host loop", t["scipy"], nfe_scipy, t["ours evals"], nfe_ours, logp_scipy),
        ("torchdiffeq Dopri5 (k-diffusion)", t["torch"], nfe_torch, t["torch evals"], nfe_torch, logp_torch),
    ]
    return [(name, *row) for row in rows]


# diffrax settings that could cost per step, each against gl_jax's (`--loop-variants`): the bounded,
# checkpointed while loop that `max_steps` selects (for reverse-mode differentiation) against a plain
# `lax.while_loop` (`max_steps=None`), and the run-time error check at the end (`throw`).
LOOP_VARIANTS = {
    "max_steps=4096, throw=True (gl_jax)": dict(max_steps=4096),
    "max_steps=None (plain lax.while_loop)": dict(max_steps=None),
    "max_steps=4096, throw=False": dict(max_steps=4096, throw=False),
    "max_steps=None, throw=False": dict(max_steps=None, throw=False),
}


def loop_variants(name: str, shape: tuple[int, ...], *, repeats: int) -> list[tuple]:
    """The likelihood's diffrax loop under each of LOOP_VARIANTS, timed against one in-loop evaluation."""
    *_, x, augmented, _ = problem(shape)
    x = jnp.asarray(x)

    def solve(x, **options):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, state, args: augmented(state[0], t)),
            diffrax.Dopri5(),
            t0=SDE.t_min,
            t1=SDE.T,
            dt0=FIRST_STEP_FRACTION * (SDE.T - SDE.t_min),
            y0=(x, jnp.zeros(x.shape[:1], x.dtype)),
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            **options,
        )
        return sol.ys[1][0], adaptive_nfe(sol.stats["num_steps"])

    fns, nfes = {}, {}
    for label, options in LOOP_VARIANTS.items():
        fn = jax.jit(functools.partial(solve, **options))
        nfes[label] = int(fn(x)[1])
        fns[label] = functools.partial(lambda fn: jax.block_until_ready(fn(x)), fn)
    count = nfes[next(iter(LOOP_VARIANTS))]
    fns["evals"] = evals_in_loop(augmented, x, jnp.ones(shape[:1]), count=count)
    times = _timing.interleave(fns, repeats=repeats)
    evals = times.pop("evals")
    return [
        (name, label, t.cell(), nfes[label], f"{t.median / (nfes[label] / count * evals.median):.3f}")
        for label, t in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs per implementation (median).")
    parser.add_argument("--loop-variants", action="store_true", help="Time diffrax's loop settings instead.")
    args = parser.parse_args()
    machine = _timing.Machine()
    if args.loop_variants:
        rows = loop_variants("D = 64, batch 256", (256, 64), repeats=args.repeats)
        rows += loop_variants("image 16x16x3, batch 64", (64, 16, 16, 3), repeats=args.repeats)
        machine.stop()
        print(f"{args.repeats} interleaved runs each (median (min-max)); {machine.line()}\n")
        print(_timing.table(("case", "diffrax loop", "wall time (s)", "NFE", "time / (NFE x eval)"), rows))
        return
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
    for i, (case, impl, wall, nfe, evals, count, logp) in enumerate(rows):
        ours = rows[i - i % 3][2]
        one_eval = _timing.Timing(tuple(v / count for v in evals.times))
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
