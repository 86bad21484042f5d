"""Time steps fitted to a model: dynamic programming on local errors, then the sampler's own error.

For few steps the choice of times matters as much as the solver (Karras et al. 2022, sec. 3; Sabour et al.
2024, "Align Your Steps"). GITS (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion
Sampling", ICML, sec. 4) observes that the probability-flow trajectories of one model are so alike that a
grid fitted on a small batch serves every sample. `fit_time_steps` fits one in two stages.

Stage 1, dynamic programming on local errors (GITS):

1. Candidates: a fine grid c_0 = t_start > c_1 > ... > c_N = t_min (`candidates` intervals of `grid`).
2. Reference: from a batch of starting points X_0 (prior samples), the states X_k at every candidate by an
   accurate solve (`reference`, `substeps` steps per candidate interval, uniform in log-SNR).
3. Cost: for every pair i < j, one step of `solver` from (X_i, c_i) to c_j gives Xhat_ij, and
   C_ij = RMS(Xhat_ij - X_j), the root mean square over the batch and the coordinates.
4. Among the paths 0 = k_0 < k_1 < ... < k_n = N of exactly n jumps, the one that minimises
   sum_m C_{k_m k_{m+1}}: D_m(j) = min_i [D_{m-1}(i) + C_ij] from D_0 = (0, inf, ..., inf), in
   O(n N^2), then a backtrack through the arg-mins. The grid is c_{k_0}, ..., c_{k_n}.

The sum of local errors bounds the endpoint error only loosely: errors of successive steps partly cancel,
and a multistep solver's step depends on the history (its single step, the proxy the cost measures, is
DDIM). On the analytic mixtures of `benchmarks/p1_sampler_error.py` the stage-1 grid is often worse than
the log-SNR grid for the multistep solvers, whose extrapolation suffers from the uneven steps it picks.

Stage 2, when a `sampler` is given: the sampler's own endpoint error on the fitting batch,
E(t) = RMS(sampler(X_0; t) - X_N), is minimised over the grid t by gradient descent (Adam, `iterations`
steps of `learning_rate`) through the sampler, as Xue et al. (2024, "Accelerating Diffusion Sampling with
Optimized Time Steps", CVPR) optimise the steps of a given solver. The grid is parametrised by the softmax
of n logits as the fractions of [t_min, t_start] its intervals take (positive, summing to one: a strictly
decreasing grid with fixed ends), each floored near `MIN_FRACTION`. E is not convex, so the descent
starts from the stage-1 grid and from each grid of `TIME_GRIDS` (vectorised) and keeps the grid of least E
met anywhere. The score and the process's alpha, sigma and log-SNR must be differentiable in t (they are
for every process of `gl_jax.sde`, piecewise for `DiscreteDDPM`), and so must the inverse log-SNR for a
singlestep sampler, which evaluates the model between grid points (closed-form for VP, sub-VP, VE, EDM and
rectified flow; a bisection, without a useful gradient, for the others).

The result is an array every sampler takes as `grid` (with the same starting point: the grid fixes
`t_start`). Cost: N^2 steps of `solver` and N * `substeps` of `reference` for stage 1, and
(1 + len(TIME_GRIDS)) * `iterations` forward and backward passes of an n-step `sampler` for stage 2, on
the fitting batch: once per model, process, sampler and NFE budget. Cache the array with the model.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from gl_jax.samplers.base import TIME_GRIDS, ScoreFn, start_point, time_grid
from gl_jax.samplers.ddim import ddim
from gl_jax.samplers.dpm_solver import dpm_solver
from gl_jax.sde import GaussianDiffusion

__all__ = [
    "MIN_FRACTION",
    "fit_time_steps",
    "local_error_costs",
    "reference_trajectory",
    "refine_time_steps",
    "shortest_path",
]

# The least fraction of the time range one interval of a refined grid takes (stage 2): no zero steps.
MIN_FRACTION = 1e-6


def reference_trajectory(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    x: jax.Array,
    candidates: jax.Array,
    *,
    reference: Callable = dpm_solver,
    substeps: int = 2,
) -> jax.Array:
    """The states `[N + 1, B, ...]` at the candidate times `[N + 1]` of the probability-flow ODE from `x`.

    Args:
      key: passed to `reference` (deterministic solvers ignore it once `x_init` is given).
      score_fn, sde: the model and the process.
      x: the states at `candidates[0]`, `[B, ...]`.
      candidates: decreasing times `[N + 1]`.
      reference: a sampler with the common signature, run from each candidate to the next with
        `substeps` steps uniform in log-SNR; a singlestep solver (it restarts at each candidate).
      substeps: steps per candidate interval.

    Returns:
      `[N + 1, B, ...]`, the first entry `x`.
    """
    log_snr = sde.log_snr(candidates)  # [N + 1]
    u = jnp.linspace(0.0, 1.0, substeps + 1)

    def interval(x, k):
        sub = sde.t_from_log_snr(log_snr[k] + (log_snr[k + 1] - log_snr[k]) * u)  # [substeps + 1]
        sub = sub.at[0].set(candidates[k]).at[-1].set(candidates[k + 1])
        x = reference(key, score_fn, sde, x.shape, steps=substeps, x_init=x, grid=sub).x
        return x, x

    _, xs = jax.lax.scan(interval, x, jnp.arange(candidates.shape[0] - 1))
    return jnp.concatenate([x[None], xs])


def local_error_costs(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    trajectory: jax.Array,
    candidates: jax.Array,
    *,
    solver: Callable = ddim,
) -> jax.Array:
    """The cost matrix `[N + 1, N + 1]` of one `solver` step between candidates (inf unless i < j).

    Args:
      key: passed to `solver`.
      score_fn, sde: the model and the process.
      trajectory: the reference states `[N + 1, B, ...]` at `candidates` (`reference_trajectory`).
      candidates: decreasing times `[N + 1]`.
      solver: a sampler with the common signature; one step of it from c_i to c_j.

    Returns:
      C with C[i, j] the RMS local error of the jump c_i -> c_j for i < j, inf otherwise.
    """
    n = candidates.shape[0] - 1

    def row(i):
        def cost(j):
            # Invalid pairs (j <= i) still run, on a valid jump, and are masked: no NaN from a zero step.
            target = jnp.maximum(j, i + 1)
            grid = jnp.stack([candidates[i], candidates[target]])
            x = solver(key, score_fn, sde, trajectory.shape[1:], steps=1, x_init=trajectory[i], grid=grid).x
            err = jnp.sqrt(jnp.mean((x - trajectory[target]) ** 2))
            return jnp.where(j > i, err, jnp.inf)

        return jax.vmap(cost)(jnp.arange(n + 1))

    # The last row (from t_min) has no jump; rows one at a time bound the memory to N + 1 batches.
    rows = jax.lax.map(row, jnp.arange(n))  # [N, N + 1]
    return jnp.concatenate([rows, jnp.full((1, n + 1), jnp.inf, rows.dtype)])


def shortest_path(costs: jax.Array, steps: int) -> jax.Array:
    """The node indices `[steps + 1]` of the cheapest path 0 -> N with exactly `steps` jumps.

    Args:
      costs: `[N + 1, N + 1]`, C[i, j] the cost of the jump i -> j (inf where not allowed).
      steps: the number of jumps, at most N.

    Returns:
      `[steps + 1]` increasing int indices from 0 to N.
    """
    n = costs.shape[0] - 1
    if not 1 <= steps <= n:
        raise ValueError(f"Need 1 <= steps <= {n} candidate intervals, got steps={steps}.")
    best = jnp.full((n + 1,), jnp.inf, costs.dtype).at[0].set(0.0)  # D_0.

    def forward(best, _):
        total = best[:, None] + costs  # [i, j]
        return jnp.min(total, axis=0), jnp.argmin(total, axis=0)

    _, argmins = jax.lax.scan(forward, best, None, length=steps)  # [steps, N + 1]

    def backward(j, argmin):
        return argmin[j], argmin[j]

    _, path = jax.lax.scan(backward, jnp.asarray(n, argmins.dtype), argmins, reverse=True)
    return jnp.concatenate([path, jnp.asarray([n], path.dtype)])


def _grid_from_logits(logits: jax.Array, t_first: jax.Array, t_last: jax.Array) -> jax.Array:
    """`[n + 1]` times from t_first down to t_last, the intervals' fractions softmax(logits) (floored)."""
    n = logits.shape[0]
    frac = (jax.nn.softmax(logits) + MIN_FRACTION) / (1.0 + n * MIN_FRACTION)  # [n], each > MIN_FRACTION / 2.
    ts = t_first + (t_last - t_first) * jnp.concatenate([jnp.zeros(1, frac.dtype), jnp.cumsum(frac)])
    return ts.at[-1].set(t_last)


def refine_time_steps(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    sampler: Callable,
    x: jax.Array,
    target: jax.Array,
    starts: jax.Array,
    *,
    iterations: int = 200,
    learning_rate: float = 0.05,
) -> jax.Array:
    """The grid of least endpoint error RMS(sampler(x; grid) - target) found by Adam from each start.

    Args:
      key: passed to `sampler`.
      score_fn, sde: the model and the process.
      sampler: a sampler with the common signature (one that ends at the grid's last time).
      x: the starting states `[B, ...]` at the grids' first time.
      target: the exact end states `[B, ...]` (the reference solve's).
      starts: `[S, n + 1]` strictly decreasing grids with the same ends.
      iterations, learning_rate: Adam's steps and step size on the logits (module docstring, stage 2).

    Returns:
      `[n + 1]` strictly decreasing times with the starts' ends.
    """
    steps = starts.shape[1] - 1
    t_first, t_last = starts[0, 0], starts[0, -1]

    def loss(logits):
        grid = _grid_from_logits(logits, t_first, t_last)
        out = sampler(key, score_fn, sde, x.shape, steps=steps, x_init=x, grid=grid).x
        return jnp.sqrt(jnp.mean((out - target) ** 2))

    optimizer = optax.adam(learning_rate)

    def descend(logits):
        def body(carry, _):
            logits, state, best, best_loss = carry
            value, grad = jax.value_and_grad(loss)(logits)
            # NaN never compares smaller, so a diverged iterate is never kept.
            best = jnp.where(value < best_loss, logits, best)
            best_loss = jnp.where(value < best_loss, value, best_loss)
            updates, state = optimizer.update(grad, state)
            return (optax.apply_updates(logits, updates), state, best, best_loss), None

        inf = jnp.asarray(jnp.inf, logits.dtype)
        carry = (logits, optimizer.init(logits), logits, inf)
        (logits, _, best, best_loss), _ = jax.lax.scan(body, carry, None, length=iterations)
        final = loss(logits)
        return jnp.where(final < best_loss, logits, best), jnp.minimum(final, best_loss)

    # The logits of a grid are the logs of its intervals (softmax normalises them), up to MIN_FRACTION.
    logits = jnp.log(-jnp.diff(starts, axis=1))  # [S, n]
    best, losses = jax.vmap(descend)(logits)
    return _grid_from_logits(best[jnp.argmin(losses)], t_first, t_last)


def fit_time_steps(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int,
    sampler: Callable | None = None,
    solver: Callable = ddim,
    reference: Callable = dpm_solver,
    candidates: int = 100,
    substeps: int = 2,
    iterations: int = 200,
    learning_rate: float = 0.05,
    x_init: jax.Array | None = None,
    t_start: float | None = None,
    grid: str | jax.Array = "logsnr",
    rho: float = 7.0,
) -> jax.Array:
    """A grid of `steps + 1` times fitted to `score_fn`: GITS's dynamic programming, then `sampler`'s error.

    The method is the module docstring's: stage 1 picks `steps` jumps among `candidates + 1` fine-grid
    times by dynamic programming on the local errors of one `solver` step, measured against an accurate
    `reference` solve of a batch of trajectories; stage 2 (only when `sampler` is given) minimises that
    sampler's endpoint error on the batch over the grid, by gradient descent from the stage-1 grid and from
    the fixed grids.

    Args:
      key: draws the batch of starting points (unless `x_init`), then passed to the solvers.
      score_fn, sde: the model and the process.
      shape: `[B, ...]`, the fitting batch (a few hundred low-dimensional points or a few dozen images).
      steps: n, the number of intervals of the fitted grid (for one-evaluation-per-step solvers, the NFE).
      sampler: the sampler the grid is for (common signature, ending at the grid's last time, e.g.
        `dpm_solver_pp`, `unipc`, `dpm_solver_multistep`, `ipndm` with their options bound by
        `functools.partial`); None returns the stage-1 grid, which serves every sampler alike.
      solver: the sampler whose one-step local error is the stage-1 cost (a multistep solver's single step
        is DDIM, so the default `ddim` is their proxy).
      reference: an accurate singlestep sampler for the reference trajectories (default DPM-Solver-3).
      candidates: N, the intervals of the fine candidate grid (stage 1 costs N^2 steps of `solver`).
      substeps: `reference` steps per candidate interval.
      iterations, learning_rate: stage 2's Adam steps from each start and its step size.
      x_init, t_start: the batch's starting states and time, as for a sampler (default: the prior at T).
      grid, rho: the candidate grid, a name in `TIME_GRIDS` (with `rho` for "karras") or an array of
        `candidates + 1` decreasing times.

    Returns:
      `[steps + 1]` strictly decreasing times from the first to the last candidate (by default `sde.T` to
      `sde.t_min`), to pass as `grid=` to any sampler.

    References:
      Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling", ICML (GITS).
      Xue et al. 2024, "Accelerating Diffusion Sampling with Optimized Time Steps", CVPR.
      Sabour et al. 2024, "Align Your Steps: Optimizing Sampling Schedules in Diffusion Models", ICML.
    """
    ts = time_grid(sde, candidates, grid=grid, t_start=t_start, rho=rho)
    ts = ts.astype(jnp.result_type(float))
    key_init, key_solve = jax.random.split(key)
    x = start_point(key_init, sde, shape, x_init).astype(ts.dtype)
    trajectory = reference_trajectory(key_solve, score_fn, sde, x, ts, reference=reference, substeps=substeps)
    costs = local_error_costs(key_solve, score_fn, sde, trajectory, ts, solver=solver)
    fitted = ts[shortest_path(costs, steps)]
    if sampler is None:
        return fitted
    # The fixed grids between the same ends (t_start given as a time even for an array of candidates).
    fixed = [time_grid(sde, steps, grid=name, t_start=ts[0], rho=rho) for name in TIME_GRIDS]
    starts = jnp.stack([fitted] + [g.astype(ts.dtype).at[-1].set(ts[-1]) for g in fixed])  # [S, n + 1]
    return refine_time_steps(
        key_solve,
        score_fn,
        sde,
        sampler,
        x,
        trajectory[-1],
        starts,
        iterations=iterations,
        learning_rate=learning_rate,
    )
