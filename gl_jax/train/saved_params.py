"""Parameter trees on disk: comparing a checkpoint's arrays with what a config builds, and reading the
parameters of another finished run (latent diffusion's autoencoder, a teacher network)."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gl_jax.train import integrity

__all__ = ["tree_shapes", "shape_difference", "step_numbers", "find_checkpoint", "load_params"]


def tree_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """`{"path/to/leaf": shape}` of a pytree of arrays, shape-dtype structs or orbax metadata."""
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): tuple(
            leaf.shape if hasattr(leaf, "shape") else np.shape(leaf)
        )
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def shape_difference(saved: Any, wanted: Any) -> str | None:
    """The first difference between two trees' leaf names and shapes, in words; None when they agree."""
    saved, wanted = tree_shapes(saved), tree_shapes(wanted)
    if saved == wanted:
        return None
    names = sorted(set(saved) ^ set(wanted))
    if names:
        return f"'{names[0]}' is in one and not the other"
    name = next(k for k in sorted(wanted) if saved[k] != wanted[k])
    return f"'{name}' has shape {saved[name]} there and {wanted[name]} here"


def step_numbers(folder: str) -> list[int]:
    """The steps whose finished checkpoints are in `folder`, sorted; none for a missing folder. orbax names
    a finished step's folder by the number alone (a partial save has a suffix)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(folder, n)))


def find_checkpoint(path: str, *, step: int = -1) -> str:
    """The `state` folder of a checkpoint: `path` is a workdir, its `checkpoints` folder or a step folder.

    Raises:
      FileNotFoundError: no checkpoint there (or not of that step), naming what was looked for.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(os.path.join(path, "state")):
        return os.path.join(path, "state")
    folder = os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
    steps = step_numbers(folder)
    if not steps:
        raise FileNotFoundError(f"No checkpoint in {folder}: name the workdir of a trained run.")
    chosen = steps[-1] if step < 0 else step
    if chosen not in steps:
        raise FileNotFoundError(f"No checkpoint of step {chosen} in {folder}; it has steps {steps}.")
    return os.path.join(folder, str(chosen), "state")


def load_params(path: str, target: Any, *, step: int = -1, use_ema: bool = True) -> Any:
    """Parameters of a run from a checkpoint `Checkpointer` wrote, checked against `target`'s structure.

    Only the `params` or `ema_params` entry of the saved train state is used, so the optimizer that wrote
    the checkpoint does not matter.

    Args:
      path: see `find_checkpoint`.
      target: a tree of the expected arrays (or `jax.ShapeDtypeStruct`s), e.g. `jax.eval_shape(init, key)`.
      step: checkpoint step (-1: the latest).
      use_ema: read `ema_params` (else `params`).

    Returns:
      The parameters as NumPy arrays, in `target`'s structure.

    Raises:
      FileNotFoundError: no checkpoint (see `find_checkpoint`).
      ValueError: the checkpoint holds other parameter names or shapes than `target`, or its files do not
        match their checksums.
    """
    state_dir = find_checkpoint(path, step=step)
    if problem := integrity.verify(os.path.dirname(state_dir)):
        raise ValueError(f"The checkpoint {os.path.dirname(state_dir)} is corrupt ({problem}).")
    restored = ocp.StandardCheckpointer().restore(state_dir)
    params = jax.tree.map(np.asarray, restored["ema_params" if use_ema else "params"])
    if detail := shape_difference(params, target):
        raise ValueError(f"The checkpoint {state_dir} holds other parameters ({detail}).")
    return jax.tree.unflatten(jax.tree.structure(target), jax.tree.leaves(params))
