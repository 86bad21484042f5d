"""`evaluate(config, workdir)`: the `--mode eval` job, sample quality per sampler setting and bits/dim.

  gl-jax --workdir runs/digits_vp --mode eval

`evaluate` restores the latest checkpoint (EMA weights when `config.sample.use_ema`) and, for every
sampler setting of `config.eval.settings`, draws `config.eval.num_samples` samples in batches, reporting
the NFE, FID against the reference statistics (computed first when missing), KID, precision/recall and,
when the Inception weights have their softmax head, the Inception Score; for a family that reports a
likelihood (`Family.reports_bits_per_dim`: the diffusion family's probability-flow ODE) it also reports the
test-set bits/dim. It writes `<workdir>/eval/report.json`, a captioned sample picture
`<workdir>/eval/<setting>.png` per setting (beside the data), and the numbers at the checkpoint's step to
`<workdir>/eval/metrics.jsonl` and TensorBoard (`<workdir>/tensorboard/eval`, tags `eval/<setting>/fid`,
..., `eval/bits_per_dim`), so the curves of successive evaluations sit beside training's. The reference
statistics come from `gl_jax.eval.reference` (`--mode stats`); images are compared by their FID Inception
features, vector data by its coordinates.

Preemption: batch i of a setting is drawn with the key `fold_in(unit_key(seed, setting name), i)`
(likewise for the likelihood's dequantization noise and probes), and after each batch its features (or
bits/dim) go to `<workdir>/eval/progress/` (`gl_jax.eval.progress`). A rerun after a kill resumes at the
next batch and reports exactly the numbers of an uninterrupted evaluation; progress written for another
checkpoint or other settings is discarded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from gl_jax import files, plots
from gl_jax.data.pipeline import load_arrays
from gl_jax.eval.features import Extractor
from gl_jax.eval.frechet import fid
from gl_jax.eval.inception_score import inception_score
from gl_jax.eval.mmd import kernel_inception_distance
from gl_jax.eval.precision_recall import precision_recall
from gl_jax.eval.progress import Progress, run_batches, unit_key
from gl_jax.eval.reference import ReferenceStats, compute_stats, feature_extractor, feature_kind
from gl_jax.eval.settings import EvalSetting, bind, eval_settings, resolve
from gl_jax.interrupts import handle_signals
from gl_jax.train import parallel, provenance
from gl_jax.train.experiment import Experiment, reading_workdir
from gl_jax.train.run_record import check_config_matches, read_record
from gl_jax.train.validation import check_config
from gl_jax.train.workdir import WorkdirLock
from gl_jax.train.writers import MetricsWriter

__all__ = ["EvalSetting", "eval_settings", "evaluate"]

log = logging.getLogger(__name__)


def _check_eval_config(config: ml_collections.ConfigDict) -> None:
    check_config(config, mode="eval")
    if config.distributed.enabled:
        raise ValueError(
            "--mode eval runs on one process; pass --config.distributed.enabled=False (it reads the "
            "checkpoints of multi-process runs)."
        )


# --- Sample quality. ---


def _sample_fn(run: Experiment, setting: EvalSetting):
    """`fn(params, key, num) -> (x, nfe)` for a resolved setting over the run's mesh, compiled once."""
    family = run.family
    if setting.sampler is not None:
        family = family.with_sampler(bind(setting), threshold=setting.threshold)
    return parallel.compile_sampler(family.sample_counted, run.mesh)


def _setting_fingerprint(config: ml_collections.ConfigDict, setting: EvalSetting, step: int) -> dict:
    """What a setting's samples depend on: resumed progress must match it."""
    return {
        "checkpoint_step": step,
        "use_ema": bool(config.sample.use_ema),
        "seed": config.seed,
        "num_samples": config.eval.num_samples,
        "batch_size": config.eval.batch_size,
        "grid_size": config.eval.grid_size,
        "setting": dataclasses.asdict(setting),
    }


def _draw_and_extract(
    run: Experiment, params: Any, setting: EvalSetting, progress: Progress, extractor: Extractor
) -> list[dict[str, np.ndarray]]:
    """Draws the setting's samples batch by batch (resuming), saving each batch's features."""
    e = run.config.eval
    sample = _sample_fn(run, setting)

    def batch(i: int, key: jax.Array) -> tuple[dict[str, np.ndarray], int]:
        count = min(e.batch_size, e.num_samples - i * e.batch_size)
        # Always a full batch (one compiled shape); the last one is cut to what is left.
        x, nfe = sample(params, key, e.batch_size)
        x = x[:count]  # [count, *data_shape]
        out = extractor(x)
        arrays = {"pool": out.pool, "samples": x[: max(0, e.grid_size - i * e.batch_size)]}
        if out.logits is not None:
            arrays["logits"] = out.logits
        if nfe is not None:
            arrays["nfe"] = np.asarray(nfe, np.int64)
        return arrays, count

    key = unit_key(run.config.seed, setting.name)
    return run_batches(
        progress, batch, key, total=e.num_samples, batch_size=e.batch_size, desc=setting.name, unit="sample"
    )


def _quality(
    config: ml_collections.ConfigDict, batches: list[dict[str, np.ndarray]], reference: ReferenceStats
) -> dict[str, Any]:
    """FID, KID, precision/recall and IS of the samples' features against the reference."""
    e = config.eval
    pool = np.concatenate([b["pool"] for b in batches]).astype(np.float64)  # [N, D]
    out: dict[str, Any] = {"fid": fid(pool, reference.stats)}
    kid = kernel_inception_distance(
        pool, reference.features, num_subsets=e.kid_subsets, subset_size=e.kid_subset_size, seed=config.seed
    )
    out.update(kid_mean=kid.mean, kid_std=kid.std)
    real = reference.features[: len(pool)]
    if min(len(real), len(pool)) > e.pr_neighbours + 1:
        pr = precision_recall(real, pool, k=e.pr_neighbours)
        out.update(precision=pr.precision, recall=pr.recall)
    else:
        log.warning("Too few samples or reference features for precision/recall with k=%d.", e.pr_neighbours)
        out.update(precision=None, recall=None)
    if "logits" in batches[0]:
        logits = np.concatenate([b["logits"] for b in batches])  # [N, 1008]
        score = inception_score(logits, splits=min(e.is_splits, len(logits)))
        out.update(inception_score=score.mean, inception_score_std=score.std)
    return out


# --- Bits per dimension. ---


def _bits_per_dim(run: Experiment, params: Any, step: int, folder: str) -> dict[str, Any] | None:
    """Test-set bits/dim of a family that reports a likelihood, resumable; None when it does not apply."""
    config, family, spec = run.config, run.family, run.spec
    e = config.eval
    if not e.bpd_examples:
        return None
    if not family.reports_bits_per_dim:
        log.info("Family %r reports no likelihood: no bits/dim.", config.family)
        return None
    if run.eval_source is None:
        log.warning("No split %r for bits/dim; skipped.", config.data.eval_split)
        return None
    arrays = load_arrays(run.eval_source, spec)
    num = min(e.bpd_examples, len(arrays["x"]))
    options = {"trace": e.bpd_trace, "rtol": e.bpd_rtol, "atol": e.bpd_atol}
    fingerprint = {
        "checkpoint_step": step,
        "use_ema": bool(config.sample.use_ema),
        "seed": config.seed,
        "split": config.data.eval_split,
        "examples": num,
        "batch_size": e.batch_size,
        "options": options,
    }
    conditional = family.conditional and "label" in arrays
    likelihood = jax.jit(lambda params, key, x, y: family.bits_per_dim(params, key, x, y, **options))

    def batch(i: int, key: jax.Array) -> tuple[dict[str, np.ndarray], int]:
        # A full batch (one compiled shape): the last one wraps around to the first examples.
        idx = np.arange(i * e.batch_size, (i + 1) * e.batch_size) % num  # [batch]
        count = min(e.batch_size, num - i * e.batch_size)
        y = arrays["label"][idx] if conditional else None
        bpd, nfe = likelihood(params, key, arrays["x"][idx], y)
        return {"bpd": np.asarray(bpd, np.float64)[:count], "nfe": np.asarray(nfe, np.int64)}, count

    progress = Progress(folder, fingerprint)
    key = unit_key(config.seed, "bits_per_dim")
    batches = run_batches(
        progress, batch, key, total=num, batch_size=e.batch_size, desc="bits/dim", unit="example"
    )
    bpd = np.concatenate([b["bpd"] for b in batches])  # [num]
    nfe = np.array([int(b["nfe"]) for b in batches])
    return {
        "bits_per_dim": float(np.mean(bpd)),
        "bits_per_dim_sem": float(np.std(bpd, ddof=1) / np.sqrt(len(bpd))) if len(bpd) > 1 else None,
        "examples": int(len(bpd)),
        "split": config.data.eval_split,
        "nfe": float(np.mean(nfe)),
        "conditional": conditional,  # log p(x | label) for class-conditional models.
        "seconds": round(progress.seconds, 3),
    }


# --- The job. ---


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the latest checkpoint in `workdir` with every setting of `config.eval.settings`.

    Writes `<workdir>/eval/report.json` (rewritten after each setting), `<workdir>/eval/<setting>.png` and
    the resumable progress in `<workdir>/eval/progress/`.

    Args:
      config: an experiment config (see `experiments/`); reads `config.eval` and `config.stats`.
      workdir: a training run's folder; a rerun resumes an interrupted evaluation.

    Returns:
      The report: `checkpoint_step`, `reference` (the statistics file), `bits_per_dim` (or None), and
      `settings`, by name, each with sampler, steps, options, nfe, fid, kid_mean, kid_std, precision,
      recall, inception_score (when the weights have a head), bits_per_dim, num_samples, checkpoint_step
      and seconds.

    Raises:
      CheckpointError: `workdir` has no readable checkpoint.
      ValueError: a bad `config.eval` (unknown sampler, option or key).
    """
    with handle_signals() as signals:
        signals.when = "during evaluation; finished batches are kept and a rerun resumes after them"
        _check_eval_config(config)
        settings = eval_settings(config)  # Config errors before anything slow.
        workdir = reading_workdir(workdir, purpose="evaluate")
        if (record := read_record(workdir)) is not None:
            check_config_matches(config, record.config, workdir=workdir)
        # Two evaluations of one run would share progress files: one at a time (training may go on).
        with WorkdirLock(os.path.join(workdir, "eval"), purpose="evaluation"):
            return _evaluate(config, workdir, settings)


def _evaluate(config: ml_collections.ConfigDict, workdir: str, settings: list[EvalSetting]) -> dict:
    run = Experiment(config, load_train=False)
    settings = [resolve(s, config, run.family, run.spec) for s in settings]
    state = run.restore(workdir, purpose="evaluate")
    params, step = run.sampling_params(state), int(state.step)
    out_dir = os.path.join(workdir, "eval")
    extractor = feature_extractor(config, run.spec)
    reference = compute_stats(config, extractor=extractor, run=run)
    report: dict[str, Any] = {
        "checkpoint_step": step,
        "use_ema": bool(config.sample.use_ema),
        "features": feature_kind(run.spec),
        "reference": {
            "path": reference.path,
            "num": reference.stats.num,
            "features": len(reference.features),
        },
        "bits_per_dim": None,
        "settings": {},
        "provenance": provenance.record(
            config,
            spec=run.spec,
            workdir=workdir,
            step=step,
            key=None,
            num=int(config.eval.num_samples),
            sampler={"settings": [files.canonical(dataclasses.asdict(s)) for s in settings]},
            kind="eval report",
        ),
    }
    report_path = os.path.join(out_dir, "report.json")
    pictures: dict[str, np.ndarray] = {}
    for setting in settings:
        log.info("Evaluating setting %r.", setting.name)
        folder = os.path.join(out_dir, "progress", "settings", setting.name)
        progress = Progress(folder, _setting_fingerprint(config, setting, step))
        batches = _draw_and_extract(run, params, setting, progress, extractor)
        start = time.perf_counter()
        entry: dict[str, Any] = {
            "sampler": setting.sampler,
            "steps": setting.steps,
            "options": files.canonical(dict(setting.options)),
            "threshold": setting.threshold,
        }
        nfe = [int(b["nfe"]) for b in batches if "nfe" in b]
        entry["nfe"] = float(np.mean(nfe)) if nfe else None
        entry["nfe_max"] = max(nfe) if nfe else None
        entry.update(_quality(config, batches, reference))
        entry.update(
            num_samples=int(sum(len(b["pool"]) for b in batches)),
            checkpoint_step=step,
            seconds=round(progress.seconds + time.perf_counter() - start, 3),
        )
        shown = [b["samples"] for b in batches if len(b["samples"])]
        if shown:
            shown = np.concatenate(shown)
            caption = (
                f"step {step} | {setting.name}: {setting.sampler}, {setting.steps} steps"
                + (f" | {entry['nfe_max']} NFE" if entry["nfe_max"] is not None else "")
                + (" | EMA parameters" if config.sample.use_ema else " | raw parameters")
            )
            reference = run.reference_data(len(shown) if shown.ndim == 4 else 2000)
            record = {**report["provenance"], "kind": "eval picture", "sampler": entry}
            path = os.path.join(out_dir, f"{setting.name}.png")
            pictures[f"eval/{setting.name}/samples"] = plots.save_samples(
                path, shown, reference=reference, caption=caption, metadata=provenance.png_metadata(record)
            )
            files.write_json(provenance.sidecar_path(path), record)
        report["settings"][setting.name] = entry
        files.write_json(report_path, report)
        log.info("%s: %s", setting.name, {k: v for k, v in entry.items() if k != "options"})
    bpd = _bits_per_dim(run, params, step, os.path.join(out_dir, "progress", "bits_per_dim"))
    report["bits_per_dim"] = bpd
    for entry in report["settings"].values():
        entry["bits_per_dim"] = bpd["bits_per_dim"] if bpd else None
    files.write_json(report_path, report)
    _write_metrics(workdir, report, pictures)
    return report


# The numbers of a setting's entry that become curves (`eval/<setting>/<name>`).
_CURVES = ("fid", "kid_mean", "precision", "recall", "inception_score", "nfe")


def _write_metrics(workdir: str, report: dict, pictures: dict[str, np.ndarray]) -> None:
    """The report's numbers at the checkpoint's step in `eval/metrics.jsonl` (a record of the same step,
    from an earlier evaluation, is replaced) and in TensorBoard's `eval` run, with the pictures."""
    step = report["checkpoint_step"]
    scalars = {
        f"eval/{name}/{key}": entry[key]
        for name, entry in report["settings"].items()
        for key in _CURVES
        if entry.get(key) is not None
    }
    if report["bits_per_dim"]:
        scalars["eval/bits_per_dim"] = report["bits_per_dim"]["bits_per_dim"]
    writer = MetricsWriter(
        workdir,
        replace_step=step,
        jsonl=os.path.join("eval", "metrics.jsonl"),
        tensorboard="tensorboard/eval",
    )
    try:
        writer.write_scalars(step, scalars)
        writer.write_images(step, pictures)
    finally:
        writer.close()
