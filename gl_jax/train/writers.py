"""Metric writers: `metrics.jsonl` and TensorBoard event files (tensorboardX, no TensorFlow).

`MetricsWriter` has the interface of clu's `metric_writers.MetricWriter` (`write_scalars`, `write_images`,
`write_texts`, `write_hparams`, `flush`, `close`), so code written against clu's writers runs against it;
clu itself is not a dependency (its TensorBoard writer needs TensorFlow). Tags carry the job that wrote them:
`train/...` (the step's metrics, learning rate, speed), `eval/...` (eval loss, sample grids, and the
FID/KID/bits-per-dim of `--mode eval`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gl_jax import files

__all__ = ["MetricsWriter", "read_metrics", "read_tensorboard", "hparams_of"]

log = logging.getLogger(__name__)


class MetricsWriter:
    """Appends scalars to `<workdir>/<jsonl>` and writes scalars, images, texts and hyper-parameters to
    TensorBoard events under `<workdir>/<tensorboard>`.

    Only process 0 writes; on other processes every method does nothing.

    Args:
      workdir: the run's folder.
      enabled: whether this process writes.
      resume_step: the step training starts from. Records of later steps (written before a kill, by a run
        that is now resumed from an earlier checkpoint) are removed from the JSON lines, with a partial
        last line, and TensorBoard is told to drop its events after that step, so no step appears twice.
      replace_step: records of this step are removed from the JSON lines first (an evaluation of a
        checkpoint that is run again replaces its record).
      jsonl: the JSON-lines file, relative to `workdir`.
      tensorboard: the TensorBoard folder, relative to `workdir` (a folder of its own is a run of its own
        in TensorBoard's list).
    """

    def __init__(
        self,
        workdir: str,
        *,
        enabled: bool = True,
        resume_step: int | None = None,
        replace_step: int | None = None,
        jsonl: str = "metrics.jsonl",
        tensorboard: str = "tensorboard",
    ):
        self._enabled = enabled
        self._jsonl = None
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            path = os.path.join(workdir, jsonl)
            if resume_step is not None:
                _truncate(path, lambda step: step <= resume_step, f"up to step {resume_step}")
            if replace_step is not None:
                _truncate(path, lambda step: step != replace_step, f"but those of step {replace_step}")
            self._jsonl = open(path, "a")  # noqa: SIM115
            purge = resume_step + 1 if resume_step else None
            self._tb = SummaryWriter(os.path.join(workdir, tensorboard), purge_step=purge)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """One JSON line `{"step": step, tag: value, ...}` and one TensorBoard scalar per tag."""
        if not self._enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
        self._jsonl.flush()
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, int(step))

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Images `[H, W, C]` or `[N, H, W, C]`, uint8 or floats in [0, 1], one tag each."""
        if not self._enabled:
            return
        for tag, image in images.items():
            image = np.asarray(image)
            if image.ndim == 3:
                self._tb.add_image(tag, image, int(step), dataformats="HWC")
            else:
                self._tb.add_images(tag, image, int(step), dataformats="NHWC")

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """Texts in TensorBoard's text tab (markdown), e.g. the run's config."""
        if self._enabled:
            for tag, text in texts.items():
                self._tb.add_text(tag, text, int(step))

    def write_hparams(self, hparams: Mapping[str, Any], *, metrics: tuple[str, ...] = ()) -> None:
        """Hyper-parameters for TensorBoard's HParams tab, e.g. `hparams_of(config)`: values that are not
        numbers, strings or booleans are shown as text. `metrics` are the scalar tags the tab shows beside
        them (the curves written under those tags)."""
        if not self._enabled:
            return
        from tensorboardX.summary import hparams as hparams_summary

        values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
        for summary in hparams_summary(values, {tag: 0.0 for tag in metrics}):
            self._tb.file_writer.add_summary(summary)

    def flush(self) -> None:
        if self._enabled:
            self._jsonl.flush()
            self._tb.flush()

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tb.close()


def hparams_of(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config flattened to `{"optim.lr": 2e-4, "model.name": "mlp", ...}` for `write_hparams`."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) or hasattr(value, "items") and not isinstance(value, str):
            out.update(hparams_of(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _parse(lines: list[bytes]) -> list[dict]:
    """The complete JSON records among `lines` (a kill can leave the last one cut short)."""
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _truncate(path: str, keep: Callable[[int], bool], kept: str) -> None:
    """Keeps the complete records of `path` whose step `keep` accepts (rewritten atomically when anything
    goes); `kept` says which, for the log."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    lines = [line for line in data.split(b"\n") if line.strip()]
    records = _parse(lines)
    records = [r for r in records if isinstance(r, dict) and keep(r.get("step", 0))]
    if len(records) == len(lines) and data.endswith(b"\n") or not data:
        return
    log.info(
        "%s: kept %d records (all %s), dropped %d (or a partial line).",
        os.path.basename(path),
        len(records),
        kept,
        len(lines) - len(records),
    )
    files.write_bytes(path, b"".join(json.dumps(r).encode() + b"\n" for r in records))


def read_metrics(workdir: str, *, jsonl: str = "metrics.jsonl") -> list[dict]:
    """The complete records of `<workdir>/<jsonl>` (empty when there is none): `metrics.jsonl` for
    training, `eval/metrics.jsonl` for `--mode eval`."""
    path = os.path.join(workdir, jsonl)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return _parse([line for line in f.read().split(b"\n") if line.strip()])


def read_tensorboard(folder: str) -> dict[str, list[tuple[int, str]]]:
    """What the event files directly in `folder` hold: tag -> `[(step, kind), ...]`, kind one of "scalar",
    "image", "text", "hparams" (read with tensorboardX's protos; no TensorFlow or TensorBoard needed)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, str]]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        at = 0
        while at + 12 <= len(data):  # TFRecord: length, its crc, the event, its crc.
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                plugin = value.metadata.plugin_data.plugin_name
                if kind == "simple_value":
                    kind = "scalar"
                elif plugin in ("text", "hparams"):
                    kind = plugin
                out.setdefault(value.tag, []).append((int(event.step), kind))
    return out
