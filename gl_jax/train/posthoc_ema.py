"""Post-hoc EMA: power-function averages tracked during training, any other EMA length chosen afterwards.

Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models" (EDM2, CVPR),
Sec. 3 and App. C; equation numbers below are the arXiv version's (2312.02696).

The profile. A power-function EMA at training step t weighs the parameters of step tau <= t by
p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) (Eq. 121): it forgets the initialisation at once
and its length grows with t. Its width relative to t, sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2
(gamma + 3))) (Eq. 123), names it; sigma_rel = 0.05 is gamma = 16.97 and 0.10 is gamma = 6.94.
Inverting Eq. 123 is the cubic gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + (12 - sigma_rel^-2) = 0,
whose largest real root is gamma (Eq. 126, Alg. 2).

Tracking it. theta_hat_t = beta_t theta_hat_(t-1) + (1 - beta_t) theta_t with beta_t = (1 - 1/t)^(gamma+1)
(Eq. 127). The product of the betas telescopes, prod_{u=s+1..t} beta_u = (s / t)^(gamma + 1), so the
weight of theta_s in theta_hat_t is (s^(gamma+1) - (s-1)^(gamma+1)) / t^(gamma+1): exactly the integral
of p_{t,gamma} over (s - 1, s]. The discrete average is therefore the continuous profile applied to the
piecewise-constant trajectory theta(tau) = theta_s on (s - 1, s], and the reconstruction below, done on
the continuous profiles, is exact for that trajectory: its only error is how well the target profile
lies in the span of the saved ones.

Reconstructing. Every `every` steps the tracked averages are saved. A wanted profile p_target is fitted
in L2 by a combination sum_i x_i p_i of the saved profiles: the normal equations A x = b with
A_ij = <p_i, p_j> and b_i = <p_i, p_target> (Eqs. 131-133), whose inner products have the closed form
of `p_dot_p` (Eq. 151, Alg. 3). Since every p_i is linear in the trajectory, the same x_i combine the
saved parameter trees into the wanted average. As in the reference implementation the solution is
renormalised to sum to one, so a constant trajectory is reproduced exactly.

Where the code differs from the reference implementation (NVlabs/edm2, `training/phema.py`): time is
counted in optimizer steps, not images (equal for a constant batch size); 1 - beta_t is computed as
-expm1((gamma + 1) log1p(-1/t)), because in float32 1 - 1/t for t ~ 1e6 has a relative error of a few
percent in 1/t and would bias the profile; the combination of saved trees is summed in float64, since the
coefficients alternate in sign and grow with the number of snapshots.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.typing import ArrayLike

from gl_jax import files

__all__ = [
    "sigma_rel_to_gamma",
    "gamma_to_sigma_rel",
    "MAX_SIGMA_REL",
    "power_profile",
    "p_dot_p",
    "power_ema_weight",
    "PowerEMAState",
    "PowerEMA",
    "power_ema",
    "PowerEMATxState",
    "power_ema_transform",
    "find_power_ema_state",
    "posthoc_sigma_rels",
    "Snapshot",
    "is_snapshot_step",
    "snapshots_of",
    "solve_posthoc_coefficients",
    "reconstruct",
    "MANIFEST",
    "POSTHOC_DIR",
    "save_snapshots",
    "read_manifest",
    "load_snapshots",
    "reconstruct_from_directory",
]

# --------------------------------------------------------------------------------------------------
# The power-function profile.


def gamma_to_sigma_rel(gamma: ArrayLike) -> np.ndarray:
    """The relative standard deviation of the power-function profile of exponent `gamma` (EDM2, Eq. 123).

    Args:
      gamma: exponent(s), > -1.

    Returns:
      sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))), float64, shaped like `gamma`.
    """
    gamma = np.asarray(gamma, np.float64)
    if np.any(gamma <= -1):
        raise ValueError(f"A power-function EMA needs gamma > -1 (an integrable profile), got {gamma}.")
    return np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: ArrayLike) -> np.ndarray:
    """The exponent gamma whose power-function profile has relative width `sigma_rel` (EDM2, Eq. 126, Alg. 2).

    Squaring Eq. 123 and clearing the denominator gives the cubic
    gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + (12 - sigma_rel^-2) = 0; gamma is its largest real
    root (the branch on which sigma_rel falls as gamma grows). Host-side float64: the exponents are
    constants of a run, fixed before anything is compiled.

    Args:
      sigma_rel: relative width(s), in (0, MAX_SIGMA_REL] (the largest width any gamma > -1 reaches).

    Returns:
      gamma, float64, shaped like `sigma_rel`.
    """
    sigma_rel = np.asarray(sigma_rel, np.float64)
    if np.any(sigma_rel <= 0):
        raise ValueError(f"sigma_rel must be positive, got {sigma_rel}.")
    gammas = []
    for inv2 in sigma_rel.reshape(-1) ** -2:
        roots = np.roots([1.0, 7.0, 16.0 - inv2, 12.0 - inv2])
        real = roots[np.abs(roots.imag) <= 1e-9 * np.maximum(1.0, np.abs(roots.real))].real
        gamma = real.max() if real.size else -np.inf
        if not gamma > -1:
            raise ValueError(
                f"No power-function EMA has sigma_rel = {inv2**-0.5:g}: the widest (gamma = "
                f"{_WIDEST_GAMMA:.4f}) has {MAX_SIGMA_REL:.4f}."
            )
        gammas.append(gamma)
    return np.asarray(gammas, np.float64).reshape(sigma_rel.shape)


# The width is largest where d/dgamma log sigma_rel^2 = 1/(g+1) - 2/(g+2) - 1/(g+3) = 0, i.e.
# g^2 + 3g + 1 = 0: gamma = (sqrt(5) - 3) / 2 ~ -0.382, sigma_rel ~ 0.3003.
_WIDEST_GAMMA = (np.sqrt(5.0) - 3.0) / 2.0
MAX_SIGMA_REL = float(gamma_to_sigma_rel(_WIDEST_GAMMA))


def power_profile(tau: ArrayLike, step: ArrayLike, gamma: ArrayLike) -> np.ndarray:
    """The continuous power-function EMA profile p_{t,gamma}(tau) (EDM2, Eq. 121), for checks and plots.

    Args:
      tau: training time(s) at which to evaluate the weight density.
      step: t, the step the average belongs to (> 0).
      gamma: the exponent (> -1).

    Returns:
      (gamma + 1) tau^gamma / t^(gamma + 1) on 0 <= tau <= t, 0 elsewhere (float64, broadcast shapes);
      it integrates to one over tau.
    """
    tau, step, gamma = (np.asarray(a, np.float64) for a in (tau, step, gamma))
    inside = (tau >= 0) & (tau <= step)
    ratio = np.clip(tau, 0.0, None) / step
    return np.where(inside, (gamma + 1) * ratio**gamma / step, 0.0)


def p_dot_p(step_a: ArrayLike, gamma_a: ArrayLike, step_b: ArrayLike, gamma_b: ArrayLike) -> np.ndarray:
    """The L2 inner product of two power-function EMA profiles, int p_a(tau) p_b(tau) dtau (EDM2, Eq. 151).

    Both profiles start at 0, so the integral runs to min(t_a, t_b); for t_a <= t_b it is
    (gamma_a + 1)(gamma_b + 1) / ((gamma_a + gamma_b + 1) t_b) (t_a / t_b)^gamma_b, and symmetrically.

    Args:
      step_a: t_a, the step of the first average (> 0).
      gamma_a: its exponent (> -1).
      step_b: t_b, the step of the second average (> 0).
      gamma_b: its exponent (> -1).

    Returns:
      The inner products, float64, broadcast over the arguments.
    """
    ta, ga, tb, gb = (np.asarray(a, np.float64) for a in (step_a, gamma_a, step_b, gamma_b))
    t_max = np.maximum(ta, tb)
    # (t_min / t_max) to the exponent of the profile that ends later: <= 1, so no overflow for large gammas.
    ratio = np.minimum(ta, tb) / t_max
    power = np.where(ta <= tb, gb, ga)
    return (ga + 1) * (gb + 1) / ((ga + gb + 1) * t_max) * ratio**power


def power_ema_weight(step: chex.Numeric, gamma: float) -> jax.Array:
    """1 - beta_t, the weight of step t's parameters in the power-function EMA (EDM2, Eq. 127).

    beta_t = (1 - 1/t)^(gamma + 1); 1 - beta_t = -expm1((gamma + 1) log1p(-1/t)), accurate in float32 for
    any t, where forming 1 - 1/t first loses most of 1/t's digits once t is large.

    Args:
      step: t, the number of optimizer updates that produced the parameters (1 for the first update's);
        t <= 1 gives weight 1 (the average restarts at the parameters).
      gamma: the exponent (a Python float: a constant of the compiled step).

    Returns:
      The float32 weight in [0, 1].
    """
    t = jnp.maximum(jnp.asarray(step, jnp.float32), 1.0)
    return -jnp.expm1((gamma + 1.0) * jnp.log1p(-1.0 / t))


# --------------------------------------------------------------------------------------------------
# Tracking during training.


class PowerEMAState(NamedTuple):
    """The tracked averages.

    Attributes:
      emas: one parameter tree per tracked sigma_rel, in the order of `PowerEMA.sigma_rels`.
    """

    emas: tuple[Any, ...]


class PowerEMA(NamedTuple):
    """Pure functions that track power-function EMAs, in the manner of an optax transformation.

    Attributes:
      init: `init(params) -> PowerEMAState`, every average starting at `params`.
      update: `update(params, state, step) -> PowerEMAState`, folding in the parameters after `step`
        updates (jit-able; `step` may be a traced int32 scalar).
      sigma_rels: the tracked relative widths.
      gammas: their exponents (`sigma_rel_to_gamma`).
    """

    init: Callable[[Any], PowerEMAState]
    update: Callable[[Any, PowerEMAState, chex.Numeric], PowerEMAState]
    sigma_rels: tuple[float, ...]
    gammas: tuple[float, ...]


def power_ema(*, sigma_rels: Sequence[float] = (0.05, 0.10)) -> PowerEMA:
    """Power-function EMAs of the parameters, one per relative width (EDM2, Sec. 3.1, Eq. 127).

    The reference implementation tracks sigma_rel = 0.05 and 0.10 and saves both; any width between (and
    somewhat beyond) is reconstructed from the saved ones (`reconstruct`).

    Args:
      sigma_rels: the relative widths to track (each in (0, MAX_SIGMA_REL]).

    Returns:
      A `PowerEMA` of pure `init` and `update` functions.
    """
    sigma_rels = tuple(float(s) for s in sigma_rels)
    if not sigma_rels:
        raise ValueError("power_ema needs at least one sigma_rel.")
    gammas = tuple(float(g) for g in sigma_rel_to_gamma(sigma_rels))

    def init(params: Any) -> PowerEMAState:
        # Own buffers for every average: a train state holding them is donated to the compiled step.
        return PowerEMAState(emas=tuple(jax.tree.map(jnp.copy, params) for _ in gammas))

    def update(params: Any, state: PowerEMAState, step: chex.Numeric) -> PowerEMAState:
        chex.assert_equal(len(state.emas), len(gammas))
        chex.assert_trees_all_equal_shapes_and_dtypes(params, *state.emas)
        emas = []
        for gamma, ema in zip(gammas, state.emas, strict=True):
            w = power_ema_weight(step, gamma)
            # ema + w (p - ema): the lerp form keeps ema exact when w is tiny (a late, long average).
            lerp = lambda e, p, w=w: (e + w.astype(e.dtype) * (p - e)).astype(e.dtype)
            emas.append(jax.tree.map(lerp, ema, params))
        return PowerEMAState(emas=tuple(emas))

    return PowerEMA(init=init, update=update, sigma_rels=sigma_rels, gammas=gammas)


class PowerEMATxState(NamedTuple):
    """The state of `power_ema_transform`: the tracked averages inside the optimizer state.

    Attributes:
      count: the number of updates folded in (int32 scalar).
      emas: one parameter tree per tracked sigma_rel, in the order of the transform's `sigma_rels`.
    """

    count: jax.Array
    emas: tuple[Any, ...]


def power_ema_transform(*, sigma_rels: Sequence[float] = (0.05, 0.10)) -> optax.GradientTransformation:
    """`power_ema` as the last link of an optax chain: it passes the updates through unchanged and folds
    the new parameters (params + updates) into the averages.

    Kept in the optimizer state, the averages are checkpointed, sharded like the parameters (one layout
    per shape) and left unchanged by a step the train step refuses as non-finite, with no code of their
    own in the step or the loop; `find_power_ema_state` reads them back for the snapshots. Its
    `update` needs `params`, and must come after every transformation that changes the updates.

    Args:
      sigma_rels: the relative widths to track (EDM2 tracks 0.05 and 0.10).

    Returns:
      An optax `GradientTransformation` whose state is a `PowerEMATxState`.
    """
    ema = power_ema(sigma_rels=sigma_rels)

    def init(params: Any) -> PowerEMATxState:
        return PowerEMATxState(count=jnp.zeros((), jnp.int32), emas=ema.init(params).emas)

    def update(updates: Any, state: PowerEMATxState, params: Any = None) -> tuple[Any, PowerEMATxState]:
        if params is None:
            raise ValueError(
                "power_ema_transform needs the parameters: call tx.update(grads, state, params)."
            )
        count = state.count + 1
        new_params = optax.apply_updates(params, updates)
        emas = ema.update(new_params, PowerEMAState(emas=state.emas), count).emas
        return updates, PowerEMATxState(count=count, emas=emas)

    return optax.GradientTransformation(init, update)


def posthoc_sigma_rels(config: Any) -> tuple[float, ...] | None:
    """The widths a run's config tracks (`config.posthoc_ema.sigma_rels`), or None when it tracks none
    (`config.posthoc_ema.every` is 0, or the config predates the section). The optimizer state, and so
    the checkpoint's layout, depends on this value."""
    section = config.get("posthoc_ema") if hasattr(config, "get") else None
    if section is None or not int(section.get("every", 0)):
        return None
    return tuple(float(s) for s in section.sigma_rels)


def find_power_ema_state(opt_state: Any) -> PowerEMATxState | None:
    """The `PowerEMATxState` inside an optimizer state (a chain's, a multi_transform's), or None."""
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, PowerEMATxState))
        if isinstance(s, PowerEMATxState)
    ]
    if len(found) > 1:
        raise ValueError(f"The optimizer state holds {len(found)} post-hoc EMA states; expected one.")
    return found[0] if found else None


# --------------------------------------------------------------------------------------------------
# Snapshots and reconstruction.


class Snapshot(NamedTuple):
    """One saved average: the parameters of the power-function EMA of width `sigma_rel` at `step`.

    Attributes:
      step: t, the number of optimizer updates the average covers.
      sigma_rel: its relative width.
      params: the averaged parameter tree (host arrays).
    """

    step: int
    sigma_rel: float
    params: Any

    @property
    def gamma(self) -> float:
        """The exponent of the average's profile (`sigma_rel_to_gamma`)."""
        return float(sigma_rel_to_gamma(self.sigma_rel))


def is_snapshot_step(step: int, *, every: int) -> bool:
    """Whether the averages after `step` updates are saved: every `every` steps, never at step 0.

    Args:
      step: the number of updates applied (the train state's step after the update).
      every: the snapshot interval in steps; 0 saves none.

    Returns:
      A Python bool (the loop decides on the host).
    """
    step, every = int(step), int(every)
    if every < 0:
        raise ValueError(f"The snapshot interval must be >= 0, got {every}.")
    return every > 0 and step > 0 and step % every == 0


def snapshots_of(ema: PowerEMA, state: PowerEMAState, step: int) -> list[Snapshot]:
    """The snapshots to save at `step`: every tracked average, fetched to the host.

    Args:
      ema: the tracker (`power_ema`), for the widths.
      state: its state after `step` updates.
      step: the number of updates applied.

    Returns:
      One `Snapshot` per tracked sigma_rel, with NumPy parameter trees.
    """
    chex.assert_equal(len(state.emas), len(ema.sigma_rels))
    return [
        Snapshot(step=int(step), sigma_rel=s, params=jax.tree.map(np.asarray, jax.device_get(tree)))
        for s, tree in zip(ema.sigma_rels, state.emas, strict=True)
    ]


def solve_posthoc_coefficients(
    in_steps: ArrayLike, in_sigma_rels: ArrayLike, out_steps: ArrayLike, out_sigma_rels: ArrayLike
) -> np.ndarray:
    """Coefficients that combine saved power-function EMAs into other ones (EDM2, App. C.3, Alg. 3).

    The least-squares fit of each target profile by the saved ones: the normal equations A X = B with
    A_ij = <p_i, p_j> and B_ik = <p_i, p_target_k> (`p_dot_p`), then every column renormalised to sum to
    one. Solved in float64 with an SVD-based least-squares routine, which equals the plain solve when A is
    well conditioned and degrades gracefully (minimum-norm coefficients) when closely spaced snapshots
    make it nearly singular.

    Args:
      in_steps: `[N]` (or broadcastable) steps of the saved averages.
      in_sigma_rels: `[N]` (or broadcastable) their widths.
      out_steps: `[K]` (or broadcastable) steps of the wanted averages.
      out_sigma_rels: `[K]` (or broadcastable) their widths.

    Returns:
      `[N, K]` float64 coefficients: target k is sum_i X[i, k] saved_i.
    """
    in_steps, in_sigma_rels = (a.reshape(-1) for a in np.broadcast_arrays(in_steps, in_sigma_rels))
    out_steps, out_sigma_rels = (a.reshape(-1) for a in np.broadcast_arrays(out_steps, out_sigma_rels))
    if np.any(np.asarray(in_steps) <= 0) or np.any(np.asarray(out_steps) <= 0):
        raise ValueError("Post-hoc EMA profiles need steps > 0 (step 0's average is the initialisation).")
    in_gammas, out_gammas = sigma_rel_to_gamma(in_sigma_rels), sigma_rel_to_gamma(out_sigma_rels)
    col = lambda x: np.asarray(x, np.float64)[:, None]
    row = lambda x: np.asarray(x, np.float64)[None, :]
    a = p_dot_p(col(in_steps), col(in_gammas), row(in_steps), row(in_gammas))  # [N, N]
    b = p_dot_p(col(in_steps), col(in_gammas), row(out_steps), row(out_gammas))  # [N, K]
    x = np.linalg.lstsq(a, b, rcond=None)[0]  # [N, K]
    return x / np.sum(x, axis=0, keepdims=True)


def _scaled(tree: Any, c: float) -> Any:
    """c * tree in float64."""
    return jax.tree.map(lambda x: np.asarray(x, np.float64) * c, tree)


def _combine(trees: Sequence[Any], coefficients: np.ndarray) -> Any:
    """sum_i c_i trees[i], accumulated in float64 and returned in the first tree's dtypes."""
    total = None
    for c, tree in zip(coefficients, trees, strict=True):
        scaled = _scaled(tree, c)
        total = scaled if total is None else jax.tree.map(np.add, total, scaled)
    return jax.tree.map(lambda t, x: t.astype(np.asarray(x).dtype), total, trees[0])


def reconstruct(snapshots: Sequence[Snapshot], sigma_rel: float, *, step: int | None = None) -> Any:
    """The power-function EMA of width `sigma_rel` at `step`, combined from saved snapshots (EDM2, Sec. 3.2).

    Args:
      snapshots: the saved averages (`snapshots_of`, `load_snapshots`), any widths and steps.
      sigma_rel: the wanted relative width.
      step: the wanted step; None: the last snapshot's.

    Returns:
      The reconstructed parameter tree (host arrays in the snapshots' dtypes).
    """
    if not snapshots:
        raise ValueError("reconstruct needs at least one snapshot.")
    steps = np.array([s.step for s in snapshots], np.float64)
    widths = np.array([s.sigma_rel for s in snapshots], np.float64)
    step = steps.max() if step is None else step
    coefficients = solve_posthoc_coefficients(steps, widths, step, sigma_rel)[:, 0]  # [N]
    return _combine([s.params for s in snapshots], coefficients)


# --------------------------------------------------------------------------------------------------
# Snapshot files: `<directory>/<step:010d>.npz` (every tracked average of one step, float32) and
# `<directory>/manifest.json` listing them. Each file is written whole (`gl_jax.files`), the npz before
# the manifest, so the manifest never names a file that is not complete.

MANIFEST = "manifest.json"
POSTHOC_DIR = "phema"  # The snapshot folder inside a run's workdir.
_FORMAT = 1


def _path_key(path: Any) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def read_manifest(directory: str | os.PathLike) -> list[dict]:
    """The manifest's entries, by step: `{"step", "file", "sigma_rels", "gammas"}`; [] when none exists."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != _FORMAT:
        found = manifest.get("format")
        raise files.UnreadableFile(f"{path}: unknown post-hoc EMA manifest format {found!r}.")
    return sorted(manifest["snapshots"], key=lambda e: e["step"])


def save_snapshots(directory: str | os.PathLike, snapshots: Sequence[Snapshot]) -> str:
    """Writes one step's snapshots as float32 to `<directory>/<step>.npz` and lists them in the manifest.

    Call it from one process (process 0); both files are replaced atomically. Saving a step again (a run
    resumed from an earlier checkpoint) replaces that step's file and entry.

    Args:
      directory: the snapshot folder (created if missing), e.g. `<workdir>/phema`.
      snapshots: the averages of one step (`snapshots_of`).

    Returns:
      The path of the written npz.
    """
    if not snapshots:
        raise ValueError("save_snapshots needs at least one snapshot.")
    steps = {s.step for s in snapshots}
    if len(steps) != 1:
        raise ValueError(f"save_snapshots writes one step's snapshots per file, got steps {sorted(steps)}.")
    step = steps.pop()
    arrays = {}
    for i, snap in enumerate(snapshots):
        for path, leaf in jax.tree_util.tree_flatten_with_path(snap.params)[0]:
            arrays[f"ema{i}/{_path_key(path)}"] = np.asarray(leaf, np.float32)
    sigma_rels = [float(s.sigma_rel) for s in snapshots]
    arrays["step"] = np.asarray(step, np.int64)
    arrays["sigma_rels"] = np.asarray(sigma_rels, np.float64)
    name = f"{step:010d}.npz"
    path = os.path.join(directory, name)
    files.save_npz(path, **arrays)
    entries = [e for e in read_manifest(directory) if e["step"] != step]
    entries.append(
        {
            "step": step,
            "file": name,
            "sigma_rels": sigma_rels,
            "gammas": [float(g) for g in sigma_rel_to_gamma(sigma_rels)],
        }
    )
    entries.sort(key=lambda e: e["step"])
    files.write_json(os.path.join(directory, MANIFEST), {"format": _FORMAT, "snapshots": entries})
    return path


def _unflatten(arrays: dict[str, np.ndarray], prefix: str, target: Any) -> Any:
    """The arrays under `prefix` as a tree: shaped like `target`, or nested dicts of the saved paths."""
    if target is None:
        tree: dict = {}
        for key, value in arrays.items():
            if not key.startswith(prefix):
                continue
            *parents, leaf = key[len(prefix) :].split("/")
            node = tree
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return tree
    leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
    out = []
    for path, like in leaves:
        key = prefix + _path_key(path)
        if key not in arrays:
            raise files.UnreadableFile(f"The snapshot has no parameter {_path_key(path)!r}.")
        value = arrays[key]
        if tuple(value.shape) != tuple(np.shape(like)):
            raise files.UnreadableFile(
                f"Parameter {_path_key(path)!r} is saved with shape {value.shape}, expected {np.shape(like)}."
            )
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, [leaf for leaf in out])


def _read_entry(directory: str | os.PathLike, entry: dict, target: Any) -> list[Snapshot]:
    path = os.path.join(directory, entry["file"])
    arrays = files.read_npz(path)
    if int(arrays["step"]) != entry["step"] or not np.allclose(arrays["sigma_rels"], entry["sigma_rels"]):
        raise files.UnreadableFile(f"{path} does not hold the manifest's step {entry['step']} averages.")
    return [
        Snapshot(step=entry["step"], sigma_rel=float(s), params=_unflatten(arrays, f"ema{i}/", target))
        for i, s in enumerate(entry["sigma_rels"])
    ]


def load_snapshots(
    directory: str | os.PathLike, *, target: Any = None, max_step: int | None = None
) -> list[Snapshot]:
    """Every snapshot the manifest lists (up to `max_step`), read back.

    Args:
      directory: the snapshot folder.
      target: a tree (arrays, or `jax.ShapeDtypeStruct` leaves) the parameters are read into, checked by path
        and shape; None: nested dicts of the saved paths.
      max_step: ignore snapshots after this step (those of a run that was resumed from an earlier
        checkpoint and has not yet overwritten them).

    Returns:
      The snapshots, by step (float32 parameters).
    """
    entries = [e for e in read_manifest(directory) if max_step is None or e["step"] <= max_step]
    return [snap for e in entries for snap in _read_entry(directory, e, target)]


def reconstruct_from_directory(
    directory: str | os.PathLike,
    sigma_rels: Sequence[float],
    *,
    target: Any = None,
    step: int | None = None,
) -> list[Any]:
    """`reconstruct` for several widths, reading one snapshot file at a time (memory: K + 1 trees).

    Args:
      directory: the snapshot folder.
      sigma_rels: `[K]` wanted widths (an eval sweep's).
      target: as in `load_snapshots`.
      step: the wanted step (snapshots after it are not used); None: the last snapshot's.

    Returns:
      K reconstructed parameter trees (float32), in the order of `sigma_rels`.
    """
    entries = [e for e in read_manifest(directory) if step is None or e["step"] <= step]
    if not entries:
        raise FileNotFoundError(f"No post-hoc EMA snapshots in {directory} (up to step {step}).")
    in_steps = np.array([e["step"] for e in entries for _ in e["sigma_rels"]], np.float64)
    in_widths = np.array([s for e in entries for s in e["sigma_rels"]], np.float64)
    step = in_steps.max() if step is None else step
    coefficients = solve_posthoc_coefficients(in_steps, in_widths, step, np.asarray(sigma_rels))  # [N, K]
    totals, i = None, 0
    for e in entries:
        for snap in _read_entry(directory, e, target):
            scaled = [_scaled(snap.params, c) for c in coefficients[i]]
            if totals is None:
                totals = scaled
            else:
                totals = [jax.tree.map(np.add, t, s) for t, s in zip(totals, scaled, strict=True)]
            i += 1
    return [jax.tree.map(lambda t: t.astype(np.float32), total) for total in totals]
