"""Checksums of every file of a checkpoint, written after the save and verified before a restore.

orbax writes arrays through tensorstore without checksums of its own, so flipped bytes in a data file
restore silently as wrong numbers (an Adam moment of 1e37, say). After a step's folder is final, the
lock holder writes `gl_jax_checksums.json` into it: the SHA-256 and size of each file. `verify` reads them
back before the step is restored; any difference (a changed, truncated or missing file) makes the step
corrupt.
"""

from __future__ import annotations

import hashlib
import json
import os

from gl_jax import files

__all__ = ["CHECKSUM_FILE", "write_checksums", "verify", "has_checksums"]

CHECKSUM_FILE = "gl_jax_checksums.json"
_CHUNK = 1 << 20


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: str) -> list[str]:
    out = []
    for root, _, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != CHECKSUM_FILE:
                out.append(rel)
    return sorted(out)


def write_checksums(folder: str) -> None:
    """Writes the SHA-256 and size of every file under `folder` (a finished step) to its checksum file."""
    table = {}
    for rel in _files(folder):
        path = os.path.join(folder, rel)
        table[rel] = {"sha256": _sha256(path), "size": os.path.getsize(path)}
    files.write_json(os.path.join(folder, CHECKSUM_FILE), {"algorithm": "sha256", "files": table})


def has_checksums(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, CHECKSUM_FILE))


def verify(folder: str) -> str | None:
    """Checks `folder` against its checksum file.

    Returns:
      None when every listed file is present with its size and SHA-256; else what differs, e.g.
      "state/d/ab12...: SHA-256 differs". A step without a checksum file is reported by `has_checksums`,
      not here (None).
    """
    path = os.path.join(folder, CHECKSUM_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            table = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{CHECKSUM_FILE} is unreadable ({type(e).__name__})"
    for rel, entry in sorted(table.items()):
        file = os.path.join(folder, rel)
        try:
            size = os.path.getsize(file)
        except OSError:
            return f"{rel} is missing"
        if size != entry.get("size"):
            return f"{rel} has {size} bytes, {entry.get('size')} were written"
        if _sha256(file) != entry.get("sha256"):
            return f"{rel}: SHA-256 differs from the one written with it"
    return None
