"""Files written whole or not at all: a reader, a second process or a kill never sees half of one.

Every writer here writes to a temporary file in the destination's folder (same file system, so the rename
is atomic), flushes it to disk, and renames it over the destination (POSIX `rename(2)`): the path holds
either the old content or the new, never a mix. A kill leaves at most a `<name>.tmp<pid>.*` file beside
it, never a half-written `<name>`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

__all__ = ["atomic_open", "write_bytes", "write_json", "canonical", "save_npz", "read_npz", "UnreadableFile"]

_TMP = ".tmp"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Opens a temporary file beside `path` for writing; renames it to `path` when the block succeeds.

    Args:
      path: the destination; its folder is created if missing.
      mode: `"wb"` or `"w"`.

    Yields:
      The open temporary file. On an exception in the block it is removed and `path` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}.")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + f"{_TMP}{os.getpid()}.")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes `value` as indented JSON (and a final newline) to `path` atomically."""
    with atomic_open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def canonical(value: Any) -> Any:
    """`value` as it reads back from JSON: tuples become lists and mappings with a `to_dict` (ConfigDicts)
    dicts, so values written either way compare equal (fingerprints of resumable work, saved configs)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """`np.savez` to `path` atomically (the name is kept as given; NumPy would append `.npz`)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


class UnreadableFile(ValueError):
    """A file that does not read back: truncated, flipped bytes, or not of the expected format."""


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an `.npz` (never unpickling anything).

    Raises:
      FileNotFoundError: there is no such file.
      UnreadableFile: it does not read back (a zip CRC, zlib, array-header or I/O error).
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: np.asarray(f[k]) for k in f.files}
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, zlib, header and I/O errors all mean the same here.
        raise UnreadableFile(f"{type(e).__name__}: {e}") from None
