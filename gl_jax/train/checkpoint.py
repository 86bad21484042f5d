"""Orbax checkpoints of the train state together with the data iterator's state.

Each checkpoint is a step folder with two items: `state` (step, params, opt_state, ema_params; written by
all processes together) and `data` (the grain iterator state, JSON), plus `gl_jax_checksums.json`, the
SHA-256 of every file, written once the step is final (`gl_jax.train.integrity`). Saves are atomic (orbax
writes to a temporary folder and renames it, and deletes checkpoints beyond `max_to_keep` only after
that), so a run killed while saving, or a save that fails on a full or read-only disk, leaves the previous
checkpoints intact. A failed save is one `CheckpointError` naming the folder, the cause and the fix; a disk
without room for the state is refused before anything is written, and so is a state with a NaN or Inf.

Two kinds of `Checkpointer`: the training run's (it holds the workdir's lock, `gl_jax.train.workdir`)
saves, removes the partial folders of saves that were killed, and moves a corrupt step (checksum mismatch,
unreadable, non-finite) aside to `corrupt/<step>` (never deleting it) so that training falls back to the
step before and saves that step again. A `read_only` one (`--mode sample`, `--mode eval`) only reads,
while training may go on in the same folder: it prefers the newest step whose checksums are written, and
skips a step that the trainer removes (`max_to_keep`) while it reads.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import serialization
from jax.experimental import multihost_utils

from gl_jax.train import integrity
from gl_jax.train.save_errors import (
    CheckpointError,
    drain_failed_save,
    read_only_mount,
    remove_partial_saves,
    save_error,
)
from gl_jax.train.saved_params import shape_difference, step_numbers, tree_shapes
from gl_jax.train.state import TrainState

__all__ = ["Checkpointer"]

log = logging.getLogger(__name__)


@jax.jit
def _all_finite(leaves: list) -> jax.Array:
    """Whether every floating-point leaf is free of NaN and Inf: one compiled reduction over a state."""
    leaves = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.asarray(True)


# A reader's options (save_interval_steps=0: orbax would warn that it sets it so itself).
_READ_ONLY = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)


class _QuietReadOnly(logging.Filter):
    """Drops orbax's warning that a read-only manager's folder is read-only: reading is all it does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


logging.getLogger("absl").addFilter(_QuietReadOnly())


def _abstract(tree: Any) -> Any:
    """Shape/dtype/sharding stand-ins for a pytree of arrays."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )


class Checkpointer:
    """Periodic saves with `max_to_keep`, resume from the latest sound checkpoint.

    Args:
      directory: where step folders go (created if missing, unless `read_only`).
      max_to_keep: number of most recent checkpoints kept.
      read_only: only restore: never create, write, move or delete anything in `directory` (for
        processes that read a run another process may be training).
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        if not read_only and jax.process_index() == 0:
            remove_partial_saves(self.directory)
        if read_only:
            options = _READ_ONLY
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))
        self._writing: int | None = None  # The step of the save in flight, if any.
        self._failed = False  # A save error was raised.

    def all_steps(self) -> list[int]:
        """The finished steps now in the folder (read afresh: another process may be saving)."""
        return step_numbers(self.directory)

    def save(self, state: TrainState, data_state: dict) -> None:
        """Saves `state` (at `state.step`) and the data iterator state; returns before the write finishes.

        A step that is already saved is not saved again. A failure of the previous, still running save
        surfaces here (or in `wait`).

        Raises:
          CheckpointError: the state holds a NaN or Inf, the disk has no room for the state, the folder is
            not writable, or a write failed; the message names the folder and the fix, and the previous
            checkpoints are intact.
        """
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read-only; it cannot be saved to.")
        step = int(state.step)
        self.wait()  # The previous save is final (orbax would wait for it too): checksum it.
        if step in self.all_steps():
            log.info("The checkpoint of step %d is already in %s.", step, self.directory)
            return
        if not bool(_all_finite(jax.tree.leaves(state))):
            raise self._save_error(
                step,
                ValueError("the state holds NaN or Inf values, so it is not saved"),
                fix="Lower config.optim.lr or tighten config.optim.grad_clip",
            )
        self._check_room(step, state)
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(serialization.to_state_dict(state)),
                    data=ocp.args.JsonSave(data_state),
                ),
                force=True,
            )
        except Exception as e:
            # The manager first waits for the previous save: an error may belong to that one.
            failed, self._writing = (self._writing if self._writing is not None else step), None
            raise self._save_error(failed, e) from e
        self._writing = step

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk, then writes their checksums.

        Raises:
          CheckpointError: the pending save failed (see `save`).
        """
        writing, self._writing = self._writing, None
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            if writing is None and self._failed:
                # More background errors of a failure already reported: nothing new to say.
                log.debug("Further error of the failed save: %s", e)
                return
            raise self._save_error(writing, e) from e
        if writing is not None and jax.process_index() == 0:
            folder = self._step_folder(writing)
            if os.path.isdir(folder):  # Not when max_to_keep has already removed it.
                integrity.write_checksums(folder)

    def _step_folder(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _save_error(self, step: int | None, error: BaseException, *, fix: str = "") -> CheckpointError:
        self._failed = bool(self._failed or not fix)  # A refused state is not a failed write.
        return save_error(self.directory, step, error, fix=fix)

    def _check_room(self, step: int, state: TrainState) -> None:
        """Refuses a save that cannot fit or cannot be written, before anything is written.

        Every process decides together (one all-gather), so they all raise or all go on to the collective
        save.
        """
        needed = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state))
        needed += 1 << 20  # orbax's metadata files.
        problem = 0
        if not os.access(self.directory, os.W_OK):
            problem = errno.EROFS if read_only_mount(self.directory) else errno.EACCES
        elif shutil.disk_usage(self.directory).free < needed:
            problem = errno.ENOSPC
        if jax.process_count() > 1:
            problem = int(np.max(multihost_utils.process_allgather(np.int32(problem))))
        if problem:
            cause = OSError(problem, os.strerror(problem), self.directory)
            if problem == errno.ENOSPC:
                free = shutil.disk_usage(self.directory).free
                cause = OSError(problem, f"{os.strerror(problem)} ({free} bytes free, {needed} needed)")
            raise self._save_error(step, cause)

    def restore_latest(
        self, target: TrainState, *, step: int | None = None
    ) -> tuple[TrainState, dict] | None:
        """Restores the newest sound checkpoint (or the one of `step`) into the structure of `target`.

        A step is sound when its files match their checksums, orbax reads it, and every number in it is
        finite. An unsound step is skipped with a warning in favour of the one before; the training run's
        checkpointer also moves it to `corrupt/<step>`, so the step is trained and saved again.

        Args:
          target: the state whose structure and shardings the checkpoint is read into.
          step: read this step only; None: the newest sound one.

        Returns:
          `(state, data_state)`, or None when there is no checkpoint yet.

        Raises:
          CheckpointError: checkpoints exist but none is sound (or not `step`), or they were written by
            another config.
        """
        abstract = _abstract(serialization.to_state_dict(target))
        if step is not None and step not in self.all_steps():
            raise CheckpointError(
                f"No checkpoint of step {step} in {self.directory}; it has {self.all_steps()}."
            )
        wanted = step
        tried: set[int] = set()
        while True:
            steps = [s for s in self.all_steps() if s not in tried and wanted in (None, s)]
            if self.read_only:
                # A step whose checksums are not written yet is being finished by the trainer; prefer
                # the newest verified one (all steps of a run written before checksums have none).
                verified = [s for s in steps if integrity.has_checksums(self._step_folder(s))]
                steps = verified or steps
            if not steps:
                break
            step = steps[-1]
            tried.add(step)
            if self.read_only:
                restored, problem = self._restore_pinned(step, target, abstract)
            else:
                restored, problem = self._restore_step(step, target, abstract)
            if restored is not None:
                return restored
            if problem is None or step not in self.all_steps():
                continue  # Removed by the trainer (max_to_keep) before or while this process read it.
            self._set_aside(step, problem)
        if tried:
            raise CheckpointError(
                f"None of the checkpoints {sorted(tried)} in {self.directory} can be read. Move the folder "
                "away to start afresh, or point --workdir elsewhere."
            )
        return None

    def _restore_pinned(self, step: int, target: TrainState, abstract: Any) -> tuple[Any, str | None]:
        """A reader's restore of `step` from hard links to its files, which the trainer's deletion of the
        step (`max_to_keep`) cannot pull away mid-read; `(None, None)` when the step is already gone.

        The links live in `<workdir>/.gl_jax_readers/<pid>/` (the same file system as the checkpoints,
        outside `checkpoints/`) and are removed after the read. Where hard links are not supported the
        step is read in place.
        """
        pinned = os.path.join(os.path.dirname(self.directory), ".gl_jax_readers", str(os.getpid()))
        source, copy = self._step_folder(step), os.path.join(pinned, str(step))
        try:
            for root, _, names in os.walk(source):
                folder = os.path.join(copy, os.path.relpath(root, source))
                os.makedirs(folder, exist_ok=True)
                for name in names:
                    os.link(os.path.join(root, name), os.path.join(folder, name))
        except FileNotFoundError:
            shutil.rmtree(pinned, ignore_errors=True)
            return None, None
        except OSError:  # No hard links here (some network file systems): read in place.
            shutil.rmtree(pinned, ignore_errors=True)
            return self._restore_step(step, target, abstract)
        manager = ocp.CheckpointManager(pinned, options=_READ_ONLY, item_names=("state", "data"))
        try:
            restored, problem = self._restore_step(step, target, abstract, folder=copy, manager=manager)
        finally:
            manager.close()
            shutil.rmtree(pinned, ignore_errors=True)
        if restored is None and not os.path.isdir(source):
            return None, None  # Deleted while it was being linked: the copy was partial.
        return restored, problem

    def _restore_step(
        self, step: int, target: TrainState, abstract: Any, *, folder: str | None = None, manager=None
    ) -> tuple[Any, str]:
        """`((state, data_state), "")` for a sound step, else `(None, what is wrong with it)`."""
        folder = folder or self._step_folder(step)
        if problem := integrity.verify(folder):
            return None, f"checksum mismatch: {problem}"
        self._check_compatible(step, abstract, folder=folder)
        try:
            restored = (manager or self._manager).restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped the same way.
            return None, f"unreadable, {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        state = serialization.from_state_dict(target, restored["state"])
        if not bool(_all_finite(jax.tree.leaves(state))):
            return None, "it holds NaN or Inf values"
        if not integrity.has_checksums(folder):
            log.warning(
                "The checkpoint of step %d in %s has no checksums (written by an older gl_jax, or the run "
                "stopped right after saving it); it was restored unverified.",
                step,
                self.directory,
            )
            if not self.read_only and jax.process_index() == 0:
                integrity.write_checksums(folder)
        return (state, restored["data"]), ""

    def _set_aside(self, step: int, problem: str) -> None:
        """Warns about an unsound step; the training run's checkpointer moves it to `corrupt/<step>`."""
        if self.read_only:
            log.warning(
                "Checkpoint at step %d in %s is corrupt (%s); falling back to the previous one.",
                step,
                self.directory,
                problem,
            )
            return
        aside = os.path.join(self.directory, "corrupt", str(step))
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            n = 1
            while os.path.exists(aside):
                n += 1
                aside = os.path.join(self.directory, "corrupt", f"{step}-{n}")
            os.rename(self._step_folder(step), aside)
        self._manager.reload()  # Forget the step, so that it can be saved again.
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"gl_jax: set aside checkpoint {step}")
        log.warning(
            "Checkpoint at step %d in %s is corrupt (%s); moved it to %s and falling back to the previous "
            "one.",
            step,
            self.directory,
            problem,
            aside,
        )

    def _check_compatible(self, step: int, abstract: Any, *, folder: str | None = None) -> None:
        """Raises when the checkpoint holds arrays of other names or shapes than the config builds."""
        try:
            # The item handler's metadata: the checkpointer's would also look for a step-level metadata
            # file inside the item folder and log that there is none.
            path = epath.Path(folder or self._step_folder(step)) / "state"
            metadata = ocp.StandardCheckpointHandler().metadata(path)
            saved = getattr(metadata, "item_metadata", metadata)
        except Exception:  # noqa: BLE001 - unreadable metadata: restore fails below and falls back.
            return
        detail = shape_difference(saved, abstract) if tree_shapes(saved) else None
        if detail is None:
            return
        raise CheckpointError(
            f"The checkpoint of step {step} in {self.directory} was written by a different model or data "
            f"config ({detail}). Use a new --workdir, or the config that wrote it."
        )

    def close(self) -> None:
        """Waits for the pending save (raising `CheckpointError` if it failed) and releases the manager."""
        try:
            self.wait()
        finally:
            try:
                self._manager.close()
            except Exception as e:
                if not self._failed:
                    raise self._save_error(None, e) from e
                log.debug("Further error of the failed save: %s", e)
            finally:
                if self._failed:
                    drain_failed_save(self._manager, self.directory)
