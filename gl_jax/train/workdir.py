"""A run's folder: checked before use, and owned by one training process at a time.

`prepare_workdir` refuses an empty or unwritable path. `WorkdirLock` is an exclusive `flock(2)` on
`<workdir>/.gl_jax.lock`, held by a training run for its whole life: the kernel releases it when the
process ends, however it ends (a SIGKILL included), so there is never a stale lock to clean by hand. The
file also names its holder (pid, host, start time) for the error a second run prints. `fcntl` is used
directly (the standard library) rather than adding `filelock` as a dependency: all this needs is one
`flock` call and writing the holder's name into the locked file.

Readers (`--mode sample`, `--mode eval`, `--mode stats`) take no lock on the run: they never write inside
`checkpoints/` (see `gl_jax.train.checkpoint`). `--mode eval` locks its own `<workdir>/eval/` the same
way, since two evaluations would share progress files.

On a network file system `flock` may be local to each machine: run one trainer per workdir there.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket

__all__ = ["WorkdirError", "WorkdirLockedError", "WorkdirLock", "prepare_workdir", "LOCK_FILE"]

LOCK_FILE = ".gl_jax.lock"


class WorkdirError(OSError):
    """The workdir is missing, cannot be created or written, or is in use."""


class WorkdirLockedError(WorkdirError):
    """Another process holds the workdir's lock."""


def prepare_workdir(workdir: str | None, *, create: bool = True) -> str:
    """The absolute workdir, created (with `samples/`) and checked to be writable.

    Args:
      workdir: the `--workdir` value.
      create: create the folder; when False it must exist.

    Raises:
      WorkdirError: empty, not a folder, missing (with `create=False`) or not writable; the message names
        the path and the fix.
    """
    if workdir is None or not str(workdir).strip():
        raise WorkdirError(
            "--workdir is empty; pass the run's folder, e.g. --workdir runs/my_run (an existing one is "
            "resumed)."
        )
    workdir = os.path.abspath(os.path.expanduser(str(workdir)))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir} is a file, not a folder; pass a folder.")
    if not create and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir} does not exist; pass the folder of a training run.")
    try:
        os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
        probe = os.path.join(workdir, f".write_test_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(
            f"Workdir {workdir} is not writable ({e.strerror}); pass a --workdir you can write to."
        ) from None
    return workdir


class WorkdirLock:
    """An exclusive lock on a folder for the life of this process (or until `release`).

    Args:
      folder: the folder to own (created if missing).
      purpose: what the holder does there, for the message a second process gets ("training").
    """

    def __init__(self, folder: str, *, purpose: str = "training"):
        self.folder = os.path.abspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        """Takes the lock without waiting.

        Raises:
          WorkdirLockedError: another process holds it; the message names its pid, host and start time.
        """
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise WorkdirError(
                    f"Cannot lock {self.path} ({e.strerror}); pass another --workdir."
                ) from None
            raise WorkdirLockedError(
                f"{self.folder} is in use by {holder.get('purpose', 'another')} process "
                f"{holder.get('pid', '?')} on host {holder.get('host', '?')} (since "
                f"{holder.get('since', '?')}); wait for it to finish or stop it, or pass another --workdir."
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "purpose": self.purpose,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Lets the lock go (the file stays: removing it would race with the next holder)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
