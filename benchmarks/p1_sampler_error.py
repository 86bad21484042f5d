"""P1: sampler error vs NFE on analytic mixtures, gl_jax next to k-diffusion's implementations.

Both libraries get the same exact denoiser (a Gaussian mixture's E[x_0 | x], written once in JAX and once
in PyTorch from the same parameters), the same EDM process (alpha = 1, sigma = t in [0.002, 80]), the same
Karras (rho = 7) noise levels and the same starting noise. The error is the RMS distance of the result to
an accurate solution of the probability-flow ODE from that noise (diffrax Tsit5, rtol = atol = 1e-9, in
float64); both samplers run in float32.

Conventions: methods whose last level is sigma_min are compared at sigma_min ("to sigma_min"); EDM's Heun
sampler steps last to sigma = 0, i.e. returns the denoiser's output at sigma_min ("to 0"), so its reference
is D(x_ref(sigma_min); sigma_min) and k-diffusion gets the same levels with a trailing 0.

DPM-Solver++(3M) is compared with k-diffusion's `sample_dpmpp_3m_sde` at eta = 0 (its ODE case) twice: with
gl_jax's default, the reference implementation's update that k-diffusion uses too (half the Taylor
coefficient of the second difference, global order 2), and with `variant_3m="taylor"` (global order 3).
On these mixtures the default has 0.55-0.8x the error of "taylor" at 5-20 steps; "taylor" is ahead from
about 50 steps.
k-diffusion's second step (before three predictions exist) differs in form -- phi_2 times the first
difference where gl_jax takes Algorithm 2's 2M step -- which does not show at the digits printed.

Multistep DPM-Solver in the noise prediction (`dpm_solver_multistep`) and iPNDM (`ipndm`, uniform
Adams-Bashforth weights) have no k-diffusion counterpart in the installed version ("-"); iPNDM with
`variable_step=True` is the same method as k-diffusion's `sample_lms` (order 4).

Fitted time steps (second table): for each sampler with one model evaluation per step, at 5 and 10 NFE,
the error with each fixed grid, with the stage-1 grid of `fit_time_steps` (GITS's dynamic programming on
DDIM local errors, sampler-agnostic, "DP") and with the grid fitted to that sampler (stage 2, "fitted").
The fits use 256 prior samples of their own (another seed than the evaluation noise), 100 log-SNR
candidates and 200 Adam steps from each of the 5 starting grids; "gain" = the best fixed grid's error /
the fitted grid's. The summary names, per problem and NFE, the sampler with the least fitted-grid error.

Run (after `make bench-install`):  .venv/bin/python -m benchmarks.p1_sampler_error
(`--skip_fitted` prints only the first table; `--fit_iterations` sets the Adam steps.) The full run takes
about 15 minutes on 2 busy CPU cores, most of it the 24 grid fits.
"""

from __future__ import annotations

import argparse
import functools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.analytic import GaussianMixture, random_mixture
from gl_jax.data.toy import ring_mixture
from gl_jax.samplers import TIME_GRIDS, time_grid
from gl_jax.samplers.dpm_solver import dpm_solver_pp
from gl_jax.samplers.dpm_solver_multistep import dpm_solver_multistep
from gl_jax.samplers.edm import edm_sampler
from gl_jax.samplers.ipndm import ipndm
from gl_jax.samplers.ode import ode_sampler
from gl_jax.samplers.time_steps import fit_time_steps
from gl_jax.samplers.unipc import unipc
from gl_jax.sde import EDMSDE

NFES = (5, 10, 20, 50)
FITTED_NFES = (5, 10)
FIT_BATCH = 256
# Samplers with one model evaluation per step (NFE = steps), for the fitted-grid table.
FITTED_SAMPLERS = {
    "DPM-Solver++(2M)": functools.partial(dpm_solver_pp, order=2),
    "DPM-Solver++(3M)": functools.partial(dpm_solver_pp, order=3),
    "UniPC-3 (bh2)": functools.partial(unipc, order=3),
    "DPM-Solver(2M) eps": functools.partial(dpm_solver_multistep, order=2),
    "DPM-Solver(3M) eps": functools.partial(dpm_solver_multistep, order=3),
    "iPNDM": ipndm,
}
BATCH = 512
SDE = EDMSDE(sigma_min=0.002, sigma_max=80.0)
KEY = jax.random.key(0)  # Unused by deterministic samplers given x_init.


def torch_denoiser(gmm: GaussianMixture):
    """The mixture's exact denoiser E[x_0 | x] at noise level sigma, in PyTorch (k-diffusion's model API)."""
    import torch

    w = torch.tensor(np.log(gmm.weights.astype(np.float64)), dtype=torch.float32)
    mu = torch.tensor(gmm.means)
    var0 = torch.tensor(gmm.stds) ** 2  # [K, D]

    def model(x, sigma):
        s2 = sigma[:, None, None] ** 2
        var = var0[None] + s2  # [B, K, D]
        diff = x[:, None, :] - mu[None]
        logits = w - 0.5 * (diff**2 / var + torch.log(2 * torch.pi * var)).sum(-1)
        resp = torch.softmax(logits, -1)[..., None]
        # E[x_0 | x, k] = mu_k + var0_k / (var0_k + sigma^2) (x - mu_k).
        return (resp * (mu[None] + var0[None] / var * diff)).sum(1)

    return model


def reference(gmm: GaussianMixture, x_init: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x(sigma_min) of the probability-flow ODE and D(x(sigma_min); sigma_min), in float64."""
    with jax.enable_x64(True):
        denoise = gmm.denoiser_fn(SDE)
        x0 = jnp.asarray(x_init, jnp.float64)
        batch = x0.shape[0]
        term = diffrax.ODETerm(lambda s, x, _: (x - denoise(x, jnp.full((batch,), s))) / s)
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Tsit5(),
            t0=SDE.sigma_max,
            t1=SDE.sigma_min,
            dt0=-0.01,
            y0=x0,
            stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-9),
            max_steps=1_000_000,
        )
        x_min = sol.ys[-1]
        return np.asarray(x_min), np.asarray(denoise(x_min, jnp.full((batch,), SDE.sigma_min)))


def starting_noise(gmm: GaussianMixture) -> np.ndarray:
    """The evaluation's starting noise `[BATCH, D]` at sigma_max (float32)."""
    rng = np.random.default_rng(0)
    return (SDE.sigma_max * rng.standard_normal((BATCH, gmm.dim))).astype(np.float32)


def rms(x, ref) -> float:
    return float(np.sqrt(np.mean((np.asarray(x, np.float64) - ref) ** 2)))


def run(gmm: GaussianMixture, name: str, k, x_init: np.ndarray, ref_min, ref_zero) -> list[tuple]:
    import torch

    score = gmm.score_fn(SDE)
    model = torch_denoiser(gmm)
    xj, xt = jnp.asarray(x_init), torch.tensor(x_init)

    def karras(n, trailing_zero):
        sig = np.asarray(time_grid(SDE, n, grid="karras"), np.float64)  # [n + 1], sigma_max -> sigma_min
        if trailing_zero:
            sig = np.append(sig, 0.0)
        return torch.tensor(sig, dtype=torch.float32)

    # name -> (steps for a target NFE, ours(steps), theirs(steps), convention)
    methods = {
        "Euler": (
            lambda nfe: nfe,
            lambda n: ode_sampler(
                KEY, score, SDE, xj.shape, steps=n, method="euler", grid="karras", x_init=xj
            ),
            lambda n: k.sample_euler(model, xt, karras(n, False), disable=True),
            ref_min,
        ),
        "Heun (EDM, to 0)": (
            lambda nfe: (nfe + 1) // 2,
            lambda n: edm_sampler(KEY, score, SDE, xj.shape, steps=n, x_init=xj),
            lambda n: k.sample_heun(model, xt, karras(n - 1, True), disable=True),
            ref_zero,
        ),
        "DPM-Solver++(2M)": (
            lambda nfe: nfe,
            lambda n: dpm_solver_pp(KEY, score, SDE, xj.shape, steps=n, order=2, x_init=xj, grid="karras"),
            lambda n: k.sample_dpmpp_2m(model, xt, karras(n, False), disable=True),
            ref_min,
        ),
        "DPM-Solver++(3M)": (
            lambda nfe: nfe,
            lambda n: dpm_solver_pp(KEY, score, SDE, xj.shape, steps=n, order=3, x_init=xj, grid="karras"),
            lambda n: k.sample_dpmpp_3m_sde(model, xt, karras(n, False), eta=0.0, disable=True),
            ref_min,
        ),
        "DPM-Solver++(3M) Taylor": (
            lambda nfe: nfe,
            lambda n: dpm_solver_pp(
                KEY, score, SDE, xj.shape, steps=n, order=3, x_init=xj, grid="karras", variant_3m="taylor"
            ),
            lambda n: k.sample_dpmpp_3m_sde(model, xt, karras(n, False), eta=0.0, disable=True),
            ref_min,
        ),
        "DPM-Solver++(2S)": (
            lambda nfe: max(nfe // 2, 1),
            lambda n: dpm_solver_pp(
                KEY, score, SDE, xj.shape, steps=n, order=2, multistep=False, x_init=xj, grid="karras"
            ),
            lambda n: k.sample_dpmpp_2s_ancestral(model, xt, karras(n, False), eta=0.0, disable=True),
            ref_min,
        ),
        "DPM-Solver(2M) eps": (
            lambda nfe: nfe,
            lambda n: dpm_solver_multistep(
                KEY, score, SDE, xj.shape, steps=n, order=2, x_init=xj, grid="karras"
            ),
            None,
            ref_min,
        ),
        "DPM-Solver(3M) eps": (
            lambda nfe: nfe,
            lambda n: dpm_solver_multistep(
                KEY, score, SDE, xj.shape, steps=n, order=3, x_init=xj, grid="karras"
            ),
            None,
            ref_min,
        ),
        "iPNDM": (
            lambda nfe: nfe,
            lambda n: ipndm(KEY, score, SDE, xj.shape, steps=n, x_init=xj, grid="karras"),
            None,
            ref_min,
        ),
        "iPNDM variable step": (
            lambda nfe: nfe,
            lambda n: ipndm(KEY, score, SDE, xj.shape, steps=n, x_init=xj, grid="karras", variable_step=True),
            lambda n: k.sample_lms(model, xt, karras(n, False), order=4, disable=True),
            ref_min,
        ),
    }
    rows = []
    for method, (steps_for, ours, theirs, ref) in methods.items():
        for nfe in NFES:
            n = steps_for(nfe)
            mine = jax.jit(lambda n=n, ours=ours: ours(n))()
            peer = None
            if theirs is not None:
                with torch.no_grad():
                    peer = rms(theirs(n).numpy(), ref)
            rows.append((name, method, int(mine.nfe), n, rms(mine.x, ref), peer))
    return rows


def run_fitted(gmm: GaussianMixture, name: str, x_init: np.ndarray, ref_min, iterations: int) -> list[tuple]:
    """Rows (data, sampler, NFE, {grid: error}) with the fixed grids, "DP" (stage 1) and "fitted"."""
    score = gmm.score_fn(SDE)
    xj = jnp.asarray(x_init)
    fit_key = jax.random.key(1)  # Another batch than the evaluation's noise.
    shape = (FIT_BATCH, gmm.dim)
    rows = []
    for nfe in FITTED_NFES:
        dp_grid = jax.jit(lambda key, nfe=nfe: fit_time_steps(key, score, SDE, shape, steps=nfe))(fit_key)
        for method, sampler in FITTED_SAMPLERS.items():
            fit = jax.jit(
                lambda key, nfe=nfe, sampler=sampler: fit_time_steps(
                    key, score, SDE, shape, steps=nfe, sampler=sampler, iterations=iterations
                )
            )
            fitted = fit(fit_key)
            solve = jax.jit(
                lambda g, nfe=nfe, sampler=sampler: (
                    sampler(KEY, score, SDE, xj.shape, steps=nfe, x_init=xj, grid=g).x
                )
            )
            grids = {g: time_grid(SDE, nfe, grid=g) for g in TIME_GRIDS}
            grids |= {"DP": dp_grid, "fitted": fitted}
            rows.append((name, method, nfe, {g: rms(solve(ts), ref_min) for g, ts in grids.items()}))
    return rows


def summary(fitted_rows: list[tuple]) -> list[str]:
    """Per problem and NFE: the sampler of least fitted-grid error against the fixed grids."""
    lines = []
    for data, nfe in dict.fromkeys((r[0], r[2]) for r in fitted_rows):
        mine = [r for r in fitted_rows if (r[0], r[2]) == (data, nfe)]
        best_any_fixed = min(min(r[3][g] for g in TIME_GRIDS) for r in mine)
        _, method, _, errs = min(mine, key=lambda r: r[3]["fitted"])
        fitted, best_fixed = errs["fitted"], min(errs[g] for g in TIME_GRIDS)
        lines.append(
            f"{data}, {nfe} NFE: best sampler {method}, fitted {fitted:.2e} vs its best fixed grid "
            f"{best_fixed:.2e} ({best_fixed / fitted:.2f}x); best fixed-grid error of any sampler "
            f"{best_any_fixed:.2e} ({best_any_fixed / fitted:.2f}x)."
        )
    return lines


def print_table(columns, widths, rows) -> None:
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip_fitted", action="store_true", help="only the sampler-vs-k-diffusion table")
    parser.add_argument("--fit_iterations", type=int, default=200, help="Adam steps of the grid fits")
    args = parser.parse_args()
    from benchmarks._peers import load_k_diffusion_sampling

    k = load_k_diffusion_sampling()
    problems = [(ring_mixture(), "2-D ring (8 modes)"), (random_mixture(16, seed=1), "16-D mixture")]
    rows, fitted_rows = [], []
    for gmm, name in problems:
        x_init = starting_noise(gmm)
        ref_min, ref_zero = reference(gmm, x_init)
        rows += run(gmm, name, k, x_init, ref_min, ref_zero)
        if not args.skip_fitted:
            fitted_rows += run_fitted(gmm, name, x_init, ref_min, args.fit_iterations)

    def cells(data, method, nfe, n, mine, peer):
        theirs = ("-", "-") if peer is None else (f"{peer:.3e}", f"{mine / peer:.2f}")
        return (data, method, str(nfe), str(n), f"{mine:.3e}", *theirs)

    columns = ("data", "method", "NFE", "steps", "gl_jax RMS err", "k-diffusion", "ratio")
    print_table(columns, (20, 23, 4, 5, 14, 12, 6), [cells(*row) for row in rows])
    print(
        "\nratio = gl_jax error / k-diffusion error (<= 1 meets the goal). k-diffusion's sampling module was "
        "loaded without its package __init__, with empty stand-ins for torchvision (benchmarks/_peers.py)."
    )
    if not fitted_rows:
        return

    grids = (*TIME_GRIDS, "DP", "fitted")
    columns = ("data", "sampler", "NFE", *grids, "gain")
    table = []
    for data, method, nfe, errs in fitted_rows:
        best_fixed = min(errs[g] for g in TIME_GRIDS)
        table.append(
            (data, method, str(nfe), *(f"{errs[g]:.2e}" for g in grids), f"{best_fixed / errs['fitted']:.2f}")
        )
    print("\nRMS endpoint error by time grid (fitted to each sampler on a separate batch):\n")
    print_table(columns, (20, 20, 3, *(9,) * len(grids), 5), table)
    print()
    print("\n".join(summary(fitted_rows)))


if __name__ == "__main__":
    main()
