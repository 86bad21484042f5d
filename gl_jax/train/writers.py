"""Metric writers: `metrics.jsonl` and TensorBoard event files (tensorboardX, no TensorFlow)."""

from __future__ import annotations

import json
import logging
import os

from gl_jax import files

__all__ = ["MetricsWriter", "read_metrics"]

log = logging.getLogger(__name__)


class MetricsWriter:
    """Appends scalars to `workdir/metrics.jsonl` and to TensorBoard events under `workdir/tensorboard`.

    Only process 0 writes; on other processes every method does nothing.

    Args:
      workdir: the run's folder.
      enabled: whether this process writes.
      resume_step: the step training starts from. Records of later steps (written before a kill, by a run
        that is now resumed from an earlier checkpoint) are removed from `metrics.jsonl`, with a partial
        last line, and TensorBoard is told to drop its events after that step, so no step appears twice.
    """

    def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
        self._enabled = enabled
        self._jsonl = None
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            path = os.path.join(workdir, "metrics.jsonl")
            if resume_step is not None:
                _truncate(path, resume_step)
            self._jsonl = open(path, "a")  # noqa: SIM115
            purge = resume_step + 1 if resume_step else None
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if not self._enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
        self._jsonl.flush()
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, int(step))

    def write_text(self, step: int, tag: str, text: str) -> None:
        """Text in TensorBoard's text tab (markdown), e.g. the run's config."""
        if self._enabled:
            self._tb.add_text(tag, text, int(step))

    def write_image(self, step: int, tag: str, image_hwc_uint8) -> None:
        if self._enabled:
            self._tb.add_image(tag, image_hwc_uint8, int(step), dataformats="HWC")

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tb.close()


def _parse(lines: list[bytes]) -> list[dict]:
    """The complete JSON records among `lines` (a kill can leave the last one cut short)."""
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _truncate(path: str, step: int) -> None:
    """Keeps the complete records of `path` up to `step` (rewritten atomically when anything goes)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    lines = [line for line in data.split(b"\n") if line.strip()]
    records = _parse(lines)
    kept = [r for r in records if isinstance(r, dict) and r.get("step", 0) <= step]
    if len(kept) == len(lines) and data.endswith(b"\n") or not data:
        return
    log.info(
        "metrics.jsonl: kept %d records up to step %d, dropped %d (later steps or a partial line).",
        len(kept),
        step,
        len(lines) - len(kept),
    )
    files.write_bytes(path, b"".join(json.dumps(r).encode() + b"\n" for r in kept))


def read_metrics(workdir: str) -> list[dict]:
    """The complete records of `workdir/metrics.jsonl` (empty when there is none)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return _parse([line for line in f.read().split(b"\n") if line.strip()])
