"""Metric writers: `metrics.jsonl` and TensorBoard event files (tensorboardX, no TensorFlow)."""

from __future__ import annotations

import json
import os

__all__ = ["MetricsWriter"]


class MetricsWriter:
    """Appends scalars to `workdir/metrics.jsonl` and to TensorBoard events under `workdir/tensorboard`.

    Only process 0 writes; on other processes every method does nothing.
    """

    def __init__(self, workdir: str, *, enabled: bool = True):
        self._enabled = enabled
        self._jsonl = None
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if not self._enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
        self._jsonl.flush()
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, int(step))

    def write_image(self, step: int, tag: str, image_hwc_uint8) -> None:
        if self._enabled:
            self._tb.add_image(tag, image_hwc_uint8, int(step), dataformats="HWC")

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of `workdir/metrics.jsonl` (empty when there is none)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
