"""A save that fails: its error (where, why, the fix, what is kept) and the clean-up after it.

orbax writes a step into `<step>.orbax-checkpoint-tmp...` and renames it when complete; a full or
read-only disk makes a save fail part-way, with background writes still queued. These functions name such
a failure in one line and make sure nothing of it is left writing or lying around.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
from typing import Any

from gl_jax.train.saved_params import step_numbers

__all__ = [
    "CheckpointError",
    "save_error",
    "remove_partial_saves",
    "read_only_mount",
    "drain_failed_save",
    "orbax_writers",
]

log = logging.getLogger(__name__)

# How long a failed save's remaining background writes are waited for before `close` returns.
DRAIN_TIMEOUT_S = 120.0


class CheckpointError(RuntimeError):
    """No readable checkpoint, or a save that failed."""


def os_error(e: BaseException) -> OSError | None:
    """The first OSError in an exception's chain (orbax re-raises background write errors wrapped)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


NO_ROOM = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def remove_partial_saves(directory: str) -> None:
    """Deletes the temporary folders of saves that failed (a full disk) or were killed, freeing their space.

    orbax writes `<step>.orbax-checkpoint-tmp...` and renames it to `<step>` only when complete, so these
    are never a checkpoint. Called before any save of this run starts.
    """
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if ".orbax-checkpoint-tmp" in name:
            log.warning(
                "Removing %s, the partial folder of an unfinished save.", os.path.join(directory, name)
            )
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def read_only_mount(path: str) -> bool:
    """Whether `path` sits on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def fix_for(code: int | None, directory: str) -> str:
    """What to do about a save that failed with OS error `code`."""
    if code in NO_ROOM:
        return (
            "Free space on that disk (delete old runs, or lower config.train.max_to_keep) or pass a "
            "--workdir on a disk with room"
        )
    if code in NOT_WRITABLE:
        return (
            f"Make {directory} writable (check its permissions and that its disk is not mounted "
            "read-only) or pass a --workdir you can write to"
        )
    return "Check that the disk has room and is writable, or pass another --workdir"


def save_error(directory: str, step: int | None, error: BaseException, *, fix: str = "") -> CheckpointError:
    """A `CheckpointError` for a failed save of `step`: where, why, how to fix, what is kept."""
    cause = os_error(error)
    code = cause.errno if cause is not None else None
    if cause is not None:
        reason = str(cause)
    else:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    fix = fix or fix_for(code, directory)
    # From the folder, not the manager, which may already count the failed step in.
    kept = [n for n in step_numbers(directory) if n != step]
    intact = (
        f"the checkpoint of step {kept[-1]} is intact and a rerun resumes from it"
        if kept
        else "no earlier checkpoint exists"
    )
    return CheckpointError(
        f"Could not save the checkpoint{'' if step is None else f' of step {step}'} in {directory}: "
        f"{reason}. {fix}; {intact}."
    )


def drain_failed_save(manager: Any, directory: str) -> None:
    """Waits out and shuts down orbax's background writers after a failed save.

    The manager's own `close` re-raises the stored save error before it shuts anything down, so
    queued metadata writes and array writes of the failed step could otherwise land after this
    returns (recreating a partial folder that a restart has just removed).
    """
    parts = (
        getattr(manager, "_checkpointer", None),
        getattr(manager, "_non_blocking_metadata_store", None),
        getattr(manager, "_blocking_metadata_store", None),
    )
    for part in parts:
        if part is None:
            continue
        for _ in range(64):  # Each call raises at most one stored error and drops that write.
            try:
                part.wait_until_finished()
                break
            except Exception as e:  # noqa: BLE001 - errors of the save already reported.
                log.debug("Further error of the failed save: %s", e)
        try:
            part.close()
        except Exception as e:  # noqa: BLE001
            log.debug("Further error of the failed save: %s", e)
    # orbax stops waiting for a save's writes at the first that fails; the others (array shards
    # through tensorstore, sharding and tree metadata) go on in their own one-shot threads and would
    # write into the partial folder after this returns. Wait those out as well.
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    for thread in orbax_writers():
        threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))
    if left := [t.name for t in orbax_writers()]:
        log.warning(
            "Background writes %s of the failed save in %s still run after %.0f s; remove its "
            "'.orbax-checkpoint-tmp' folder once this process has exited.",
            left,
            directory,
            DRAIN_TIMEOUT_S,
        )


def orbax_writers() -> list[threading.Thread]:
    """The live one-shot threads in which orbax runs the writes of a save (not its long-lived workers)."""
    return [
        t
        for t in threading.enumerate()
        if t is not threading.current_thread()
        and type(t).__name__ == "_SignalingThread"
        and type(t).__module__.startswith("orbax.")
    ]
