"""Resumable evaluation: per-batch results kept on disk, keys that depend only on what is evaluated.

Batch i of an evaluation unit (a sampler setting, or the test-set likelihood) is computed with the key
`fold_in(unit_key(seed, name), i)` and its results saved before the next batch starts, so a killed
evaluation resumes after its last finished batch and reports the numbers of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import zlib
from collections.abc import Callable

import jax
import numpy as np
import tqdm

from gl_jax import files

__all__ = ["Progress", "unit_key", "run_batches"]

log = logging.getLogger(__name__)

# Folded into the run's seed first, so evaluation keys never coincide with the trainer's.
_EVAL_TAG = 0x45564C


class Progress:
    """Per-batch results of one evaluation unit in a folder, with a `state.json` naming how many are done.

    Batch i goes to `batch_<i>.npz` before `state.json` counts it, each written through a rename, so a
    kill at any point leaves a consistent folder (a batch file not yet counted is recomputed, identically).
    Progress with another fingerprint (checkpoint, settings, seed) is discarded.
    """

    def __init__(self, folder: str, fingerprint: dict):
        self.folder = folder
        self.fingerprint = files.canonical(fingerprint)
        self.done, self.seconds = 0, 0.0
        state = self._read_state()
        if state is not None and state.get("fingerprint") == self.fingerprint:
            self.done, self.seconds = int(state["done"]), float(state["seconds"])
            for name in os.listdir(folder):
                if ".tmp" in name:  # A write a kill interrupted (this process holds the eval lock).
                    os.remove(os.path.join(folder, name))
            self.done = self._readable_batches()
            log.info("Resuming after %d finished batches in %s.", self.done, folder)
        elif os.path.isdir(folder):
            if state is not None:
                log.info("Discarding the progress in %s: it was made with other settings.", folder)
            shutil.rmtree(folder)
        os.makedirs(folder, exist_ok=True)

    def _read_state(self) -> dict | None:
        path = os.path.join(self.folder, "state.json")
        try:
            with open(path) as f:
                state = json.load(f)
            int(state["done"]), float(state["seconds"]), state["fingerprint"]  # noqa: B018 - its fields.
            return state
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("The progress file %s is corrupt (%s); starting this part again.", path, e)
            return None

    def _readable_batches(self) -> int:
        """How many of the counted batches read back; the first corrupt one and those after are redone."""
        for i in range(self.done):
            try:
                files.read_npz(self._batch_path(i))
            except (OSError, files.UnreadableFile) as e:
                log.warning(
                    "The progress file %s is corrupt (%s); redoing batches %d to %d.",
                    self._batch_path(i),
                    type(e).__name__,
                    i,
                    self.done - 1,
                )
                return i
        return self.done

    def _batch_path(self, i: int) -> str:
        return os.path.join(self.folder, f"batch_{i:06d}.npz")

    def load(self) -> list[dict[str, np.ndarray]]:
        """The arrays of the finished batches, in order."""
        return [files.read_npz(self._batch_path(i)) for i in range(self.done)]

    def save(self, i: int, arrays: dict[str, np.ndarray], seconds: float) -> None:
        """Records batch `i` (the next one) and the wall time spent so far."""
        files.save_npz(self._batch_path(i), **arrays)
        self.done, self.seconds = i + 1, seconds
        state = {"fingerprint": self.fingerprint, "done": self.done, "seconds": seconds}
        files.write_json(os.path.join(self.folder, "state.json"), state)


def unit_key(seed: int, name: str) -> jax.Array:
    """The base key of an evaluation unit: a function of the seed and the unit's name only."""
    key = jax.random.fold_in(jax.random.key(seed), _EVAL_TAG)
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def run_batches(
    progress: Progress,
    fn: Callable[[int, jax.Array], tuple[dict[str, np.ndarray], int]],
    key: jax.Array,
    *,
    total: int,
    batch_size: int,
    desc: str,
    unit: str,
) -> list[dict[str, np.ndarray]]:
    """Runs `fn(i, fold_in(key, i)) -> (arrays, count)` for the batches `progress` has not finished, with a
    progress bar (rate, ETA), saving each batch's arrays; returns the arrays of every batch, in order.

    Args:
      progress: the unit's `Progress`.
      fn: computes batch i; `count` is how many of the `total` items it covered.
      key: the unit's key (`unit_key`).
      total: items in all (samples, examples).
      batch_size: items per batch.
      desc, unit: the progress bar's label and unit.
    """
    bar = tqdm.tqdm(
        total=total,
        initial=min(progress.done * batch_size, total),
        unit=unit,
        desc=desc,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    start = time.perf_counter() - progress.seconds
    with bar:
        for i in range(progress.done, math.ceil(total / batch_size)):
            arrays, count = fn(i, jax.random.fold_in(key, i))
            progress.save(i, arrays, time.perf_counter() - start)
            bar.update(count)
    return progress.load()
