"""Orbax checkpoints of the train state together with the data iterator's state.

Each checkpoint is a step folder with two items: `state` (step, params, opt_state, ema_params; written by
all processes together) and `data` (the grain iterator state, JSON). Saves are atomic (orbax writes to a
temporary folder and renames it), so a run killed while saving leaves the previous checkpoints intact. On
restore, a latest checkpoint that cannot be read is skipped with a warning in favour of the one before.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import serialization

from gl_jax.train.state import TrainState

__all__ = ["Checkpointer", "CheckpointError"]

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No readable checkpoint, or a save that failed."""


def _abstract(tree: Any) -> Any:
    """Shape/dtype/sharding stand-ins for a pytree of arrays."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


class Checkpointer:
    """Periodic saves with `max_to_keep`, resume from the latest readable checkpoint.

    Args:
      directory: where step folders go (created if missing).
      max_to_keep: number of most recent checkpoints kept.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState, data_state: dict) -> None:
        """Saves `state` (at `state.step`) and the data iterator state; returns before the write finishes."""
        step = int(state.step)
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(serialization.to_state_dict(state)),
                    data=ocp.args.JsonSave(data_state),
                ),
                force=True,
            )
        except OSError as e:
            raise CheckpointError(
                f"Could not save the checkpoint of step {step} in {self.directory}: {e}. Free disk space or "
                "check permissions; the previous checkpoints are intact."
            ) from e

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def restore_latest(self, target: TrainState) -> tuple[TrainState, dict] | None:
        """Restores the newest readable checkpoint into the structure (and shardings) of `target`.

        Returns:
          `(state, data_state)`, or None when there is no checkpoint yet.

        Raises:
          CheckpointError: checkpoints exist but none can be read.
        """
        steps = self.all_steps()
        abstract = _abstract(serialization.to_state_dict(target))
        for step in reversed(steps):
            self._check_compatible(step, abstract)
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
                    ),
                )
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped the same way.
                log.warning(
                    "Checkpoint at step %d in %s is unreadable (%s: %s); falling back to the previous one.",
                    step,
                    self.directory,
                    type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "",
                )
                continue
            state = serialization.from_state_dict(target, restored["state"])
            return state, restored["data"]
        if steps:
            raise CheckpointError(
                f"None of the checkpoints {steps} in {self.directory} can be read. Move the folder away "
                "to start afresh, or point --workdir elsewhere."
            )
        return None

    def _check_compatible(self, step: int, abstract: Any) -> None:
        """Raises when the checkpoint holds arrays of other names or shapes than the config builds."""
        try:
            metadata = ocp.StandardCheckpointer().metadata(os.path.join(self.directory, str(step), "state"))
            saved = _shapes(getattr(metadata, "item_metadata", metadata))
        except Exception:  # noqa: BLE001 - unreadable metadata: restore fails below and falls back.
            return
        wanted = _shapes(abstract)
        if not saved or saved == wanted:
            return
        diff = sorted(set(saved) ^ set(wanted))
        if diff:
            detail = f"'{diff[0]}' is in one and not the other"
        else:
            name = next(k for k in sorted(wanted) if saved[k] != wanted[k])
            detail = f"'{name}' has shape {saved[name]} there and {wanted[name]} in this config"
        raise CheckpointError(
            f"The checkpoint of step {step} in {self.directory} was written by a different model or data "
            f"config ({detail}). Use a new --workdir, or the config that wrote it."
        )

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
