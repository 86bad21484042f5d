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

Memorisation (every family): each setting's samples, as the dataset stores examples (pixel levels, or
coordinates), against the training split by the nearest-neighbour ratio of `gl_jax.eval.memorisation`:
`closer_than_training`, the fraction of samples closer to a training example than that example is to its
nearest other one, and `memorised_fraction`, those under a third of it. The report's `memorisation`
entry gives the same numbers for as many test examples (what fresh draws from the data give) and names
`<workdir>/eval/nearest.png`: the first setting's samples nearest to the training set beside their
nearest training images.

Usefulness (class-conditional families): class-balanced samples drawn with `config.sample` (its guidance
weight included), as many as the training split has but at most `config.eval.num_samples`, train the
fixed classifier of `gl_jax.eval.usefulness`: the report's `usefulness` entry holds the Classification
Accuracy Score (Ravuri & Vinyals 2019) on the eval split beside the same classifier trained on the real
training split, and the augmentation curve (1 %, 10 %, 100 % of the real split, without and with the
samples); curves `eval/cas`, `eval/real_accuracy`, `eval/augmentation/...`.

Preemption: batch i of a setting is drawn with the key `fold_in(unit_key(seed, setting name), i)`
(likewise for the likelihood's dequantization noise and probes), and after each batch its features (or
bits/dim) go to `<workdir>/eval/progress/` (`gl_jax.eval.progress`). A rerun after a kill resumes at the
next batch and reports exactly the numbers of an uninterrupted evaluation; progress written for another
checkpoint or other settings is discarded.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from gl_jax import files, plots
from gl_jax.data.pipeline import load_arrays
from gl_jax.eval.features import Extractor
from gl_jax.eval.fitted_grid import fitted_setting
from gl_jax.eval.frechet import fid
from gl_jax.eval.inception_score import inception_score
from gl_jax.eval.memorisation import Novelty, memorised_fraction, novelty
from gl_jax.eval.mmd import kernel_inception_distance
from gl_jax.eval.precision_recall import precision_recall
from gl_jax.eval.progress import Progress, run_batches, unit_key
from gl_jax.eval.reference import ReferenceStats, compute_stats, feature_extractor, feature_kind
from gl_jax.eval.settings import EvalSetting, bind, eval_settings, resolve
from gl_jax.eval.usefulness import as_model_input, as_stored, class_sampler, usefulness
from gl_jax.interrupts import handle_signals
from gl_jax.spec import DataSpec
from gl_jax.train import parallel, provenance
from gl_jax.train.experiment import Experiment, reading_workdir
from gl_jax.train.posthoc_ema import (
    POSTHOC_DIR,
    posthoc_sigma_rels,
    read_manifest,
    reconstruct_from_directory,
)
from gl_jax.train.run_record import check_config_matches, read_record
from gl_jax.train.validation import check_config
from gl_jax.train.workdir import WorkdirLock
from gl_jax.train.writers import MetricsWriter

__all__ = ["EvalSetting", "eval_settings", "evaluate", "report_folder"]

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
    return parallel.compile_sampler(family.sample_one, run.mesh)


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
        "contents": _BATCH_CONTENTS,
    }


def _draw_and_extract(
    run: Experiment, params: Any, setting: EvalSetting, progress: Progress, extractor: Extractor
) -> list[dict[str, np.ndarray]]:
    """Draws the setting's samples batch by batch (resuming), saving each batch's features and samples
    (`as_stored`: the memorisation entry compares them with the training split)."""
    e = run.config.eval
    sample = _sample_fn(run, setting)

    def batch(i: int, key: jax.Array) -> tuple[dict[str, np.ndarray], int]:
        count = min(e.batch_size, e.num_samples - i * e.batch_size)
        # Always a full batch (one compiled shape); the last one is cut to what is left.
        x, nfe = sample(params, key, e.batch_size)
        x = x[:count]  # [count, *data_shape]
        out = extractor(x)
        arrays = {"pool": out.pool, "samples": x[: max(0, e.grid_size - i * e.batch_size)]}
        arrays["x"] = as_stored(x, run.spec, dequantized=run.config.data.dequantize)
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


# --- The real splits. ---

# What a setting's saved batches hold: progress saved by an evaluator whose batches held less is redone.
_BATCH_CONTENTS = ("pool", "samples", "x", "nfe", "logits")


class _Splits:
    """The real train and eval splits as stored (uint8 images), read once when first needed."""

    def __init__(self, run: Experiment):
        self.run = run

    @functools.cached_property
    def train(self) -> dict[str, np.ndarray] | None:
        source = self.run.sources.get("train")
        return None if source is None else load_arrays(source, self.run.spec)

    @functools.cached_property
    def test(self) -> dict[str, np.ndarray] | None:
        source = self.run.eval_source
        return None if source is None else load_arrays(source, self.run.spec)


# --- Memorisation. ---


def _memorisation(stored: np.ndarray, train: np.ndarray) -> tuple[dict[str, float], Novelty]:
    """The nearest-training-example ratios rho of samples (`gl_jax.eval.memorisation`), in the stored
    space (pixel levels, or coordinates): the fraction closer to a training example than that example is
    to its own nearest other one (rho < 1), the fraction flagged as memorised (rho < 1/3), the median."""
    found = novelty(np.asarray(stored, np.float32), np.asarray(train, np.float32))
    numbers = {
        "closer_than_training": memorised_fraction(found.ratio, threshold=1.0),
        "memorised_fraction": memorised_fraction(found.ratio),
        "median_nn_ratio": float(np.median(found.ratio)),
    }
    return numbers, found


def _nearest_picture(
    path: str, stored: np.ndarray, found: Novelty, train: np.ndarray, spec: DataSpec, **kwargs: Any
) -> np.ndarray:
    """The `count` samples nearest to the training set (smallest rho first) beside their nearest training
    images, written to `path` (`caption` and `metadata` go to `plots.save_samples`)."""
    order = np.argsort(found.ratio, kind="stable")[: kwargs.pop("count")]
    shown = as_model_input(stored[order], spec)  # [count, H, W, C]
    nearest = as_model_input(train[found.index[order]], spec)
    return plots.save_samples(path, shown, reference=nearest, **kwargs)


def _memorisation_entry(
    config: ml_collections.ConfigDict,
    run: Experiment,
    setting: EvalSetting,
    step: int,
    stored: np.ndarray,
    found: Novelty,
    splits: _Splits,
    out_dir: str,
    record: dict,
    pictures: dict[str, np.ndarray],
) -> dict[str, Any]:
    """The report's `memorisation` entry, of the first setting's samples: what the numbers are compared
    in, the same numbers for as many test examples (what fresh draws from the data give), and the picture
    `eval/nearest.png` (image data) of the samples nearest to the training set beside their neighbours."""
    entry: dict[str, Any] = {
        "setting": setting.name,
        "space": "pixel levels" if run.spec.kind == "image" else "coordinates",
        "memorised_below": 1.0 / 3.0,
        "num_train": int(len(splits.train["x"])),
        "test": None,
        "picture": None,
    }
    if splits.test is not None:
        test, _ = _memorisation(splits.test["x"][: len(stored)], splits.train["x"])
        entry["test"] = {**test, "num": int(min(len(stored), len(splits.test["x"])))}
    if run.spec.kind == "image":
        count = min(config.eval.grid_size, len(stored))
        closer = memorised_fraction(found.ratio, threshold=1.0)
        caption = (
            f"step {step} | {setting.name}: the {count} of {len(stored)} samples nearest to the training "
            f"set (right) and their nearest training images (left) | {closer:.1%} closer than training "
            f"images to each other, {memorised_fraction(found.ratio):.1%} at under 1/3"
        )
        path = os.path.join(out_dir, "nearest.png")
        meta = {**record, "kind": "eval picture", "sampler": {"setting": setting.name}}
        pictures["eval/nearest"] = _nearest_picture(
            path,
            stored,
            found,
            splits.train["x"],
            run.spec,
            count=count,
            caption=caption,
            metadata=provenance.png_metadata(meta),
        )
        files.write_json(provenance.sidecar_path(path), meta)
        entry["picture"] = "nearest.png"
    return entry


# --- Usefulness: CAS and the augmentation curve of a class-conditional model. ---


def _usefulness(run: Experiment, params: Any, step: int, folder: str, splits: _Splits) -> dict | None:
    """CAS, the real-data classifier's accuracy and the augmentation curve (`gl_jax.eval.usefulness`) of
    class-balanced samples drawn with the config's sampling (`config.sample`, guidance included), as many
    as the training split holds but at most `config.eval.num_samples` (rounded up to equal classes);
    resumable. None for an unconditional family or data without labelled train and eval splits."""
    config, family, spec = run.config, run.family, run.spec
    if not family.conditional:
        return None
    if splits.train is None or splits.test is None or "label" not in splits.train:
        log.warning("No labelled train and %r splits: no usefulness entry.", config.data.eval_split)
        return None
    e, s = config.eval, config.sample
    num_classes = int(spec.num_classes)
    per_class = math.ceil(min(len(splits.train["x"]), e.num_samples) / num_classes)
    per_batch = math.ceil(per_class / math.ceil(per_class / e.batch_size))  # Equal batches within a class.
    batches_per_class = math.ceil(per_class / per_batch)
    per_class = batches_per_class * per_batch
    sampling = {
        "sampler": s.sampler,
        "steps": s.steps,
        "options": files.canonical(dict(s.options)),
        "threshold": s.threshold,
        "guidance": float(s.guidance),
    }
    fingerprint = {
        "checkpoint_step": step,
        "use_ema": bool(s.use_ema),
        "seed": config.seed,
        "per_class": per_class,
        "per_batch": per_batch,
        "sampling": sampling,
    }
    sample = class_sampler(family, run.mesh)

    def batch(i: int, key: jax.Array) -> tuple[dict[str, np.ndarray], int]:
        label = i // batches_per_class  # Batches of class 0 first, then class 1, ...
        x, nfe = sample(params, key, label, per_batch)
        arrays = {
            "x": as_stored(x, spec, dequantized=config.data.dequantize),
            "label": np.full((per_batch,), label, np.int32),
        }
        if nfe is not None:
            arrays["nfe"] = np.asarray(nfe, np.int64)
        return arrays, per_batch

    progress = Progress(folder, fingerprint)
    batches = run_batches(
        progress,
        batch,
        unit_key(config.seed, "usefulness"),
        total=num_classes * per_class,
        batch_size=per_batch,
        desc="usefulness",
        unit="sample",
    )
    start = time.perf_counter()
    stored = np.concatenate([b["x"] for b in batches])  # [num_classes * per_class, ...]
    labels = np.concatenate([b["label"] for b in batches])
    train, test = splits.train, splits.test
    out = usefulness(
        as_model_input(train["x"], spec),
        train["label"],
        as_model_input(stored, spec),
        labels,
        as_model_input(test["x"], spec),
        test["label"],
        num_classes=num_classes,
    )
    memorisation, _ = _memorisation(stored, train["x"])
    nfe = [int(b["nfe"]) for b in batches if "nfe" in b]
    out.update(
        sampling=sampling,
        per_class=per_class,
        nfe=max(nfe) if nfe else None,
        memorisation=memorisation,
        checkpoint_step=step,
        seconds=round(progress.seconds + time.perf_counter() - start, 3),
    )
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
      The report: `checkpoint_step`, `reference` (the statistics file), `bits_per_dim` (or None),
      `memorisation` (None without a train split), `usefulness` (None but for class-conditional
      families), and `settings`, by name, each with sampler, steps, options, nfe, fid, kid_mean, kid_std,
      precision, recall, inception_score (when the weights have a head), closer_than_training,
      memorised_fraction, median_nn_ratio, bits_per_dim, num_samples, checkpoint_step and seconds.

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


def report_folder(config: ml_collections.ConfigDict) -> str:
    """Where `evaluate` writes, relative to the workdir: "eval", or "eval/step_<N>" for
    `config.eval.checkpoint_step` N (an evaluation of an earlier checkpoint keeps the newest one's report)."""
    step = _checkpoint_step(config)
    return "eval" if step is None else os.path.join("eval", f"step_{step}")


def _checkpoint_step(config: ml_collections.ConfigDict) -> int | None:
    """`config.eval.checkpoint_step`, None for the newest checkpoint (-1)."""
    step = int(config.eval.get("checkpoint_step", -1))
    return None if step < 0 else step


def _evaluate(config: ml_collections.ConfigDict, workdir: str, settings: list[EvalSetting]) -> dict:
    run = Experiment(config, load_train=False)
    settings = [resolve(s, config, run.family, run.spec) for s in settings]
    state = run.restore(workdir, purpose="evaluate", step=_checkpoint_step(config))
    params, step = run.sampling_params(state), int(state.step)
    # Settings with options.grid = "fitted": the grid fitted to these parameters (cached per checkpoint).
    settings = [
        fitted_setting(
            run.family,
            params,
            s,
            fingerprint={"checkpoint_step": step, "use_ema": bool(config.sample.use_ema)},
            folder=os.path.join(workdir, "eval", "time_steps"),
            key=jax.random.fold_in(jax.random.key(config.seed), 7),
            batch_size=int(config.eval.get("fit_batch_size", 64)),
        )
        for s in settings
    ]
    # The post-hoc EMA sweep's snapshots, read (and their absence refused) before anything slow.
    snapshot_steps = _snapshot_steps(config, workdir, step) if config.eval.get("posthoc_sigma_rels") else None
    out_dir = os.path.join(workdir, report_folder(config))
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
        "memorisation": None,
        "usefulness": None,
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
    splits = _Splits(run)
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
        stored = np.concatenate([b["x"] for b in batches])  # [num_samples, ...]
        if splits.train is not None:
            numbers, found = _memorisation(stored, splits.train["x"])
            entry.update(numbers)
            if report["memorisation"] is None:
                report["memorisation"] = _memorisation_entry(
                    config, run, setting, step, stored, found, splits, out_dir, report["provenance"], pictures
                )
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
            data = run.reference_data(len(shown) if shown.ndim == 4 else 2000)
            record = {**report["provenance"], "kind": "eval picture", "sampler": entry}
            path = os.path.join(out_dir, f"{setting.name}.png")
            pictures[f"eval/{setting.name}/samples"] = plots.save_samples(
                path, shown, reference=data, caption=caption, metadata=provenance.png_metadata(record)
            )
            files.write_json(provenance.sidecar_path(path), record)
        report["settings"][setting.name] = entry
        files.write_json(report_path, report)
        log.info("%s: %s", setting.name, {k: v for k, v in entry.items() if k != "options"})
    if snapshot_steps is not None:
        report["posthoc_ema"] = _posthoc_sweep(
            run, state, settings[0], step, snapshot_steps, workdir, extractor, reference, pictures
        )
        files.write_json(report_path, report)
    report["usefulness"] = _usefulness(
        run, params, step, os.path.join(out_dir, "progress", "usefulness"), splits
    )
    if report["usefulness"] is not None:
        files.write_json(report_path, report)
        u = report["usefulness"]
        log.info(
            "usefulness: CAS %.4f, real data %.4f, augmentation %s",
            u["cas"],
            u["real_accuracy"],
            u["augmentation"],
        )
    bpd = _bits_per_dim(run, params, step, os.path.join(out_dir, "progress", "bits_per_dim"))
    report["bits_per_dim"] = bpd
    for entry in report["settings"].values():
        entry["bits_per_dim"] = bpd["bits_per_dim"] if bpd else None
    files.write_json(report_path, report)
    _write_metrics(workdir, report, pictures)
    return report


# --- Post-hoc EMA. ---


def _snapshot_steps(config: ml_collections.ConfigDict, workdir: str, step: int) -> list[int]:
    """The steps of the run's post-hoc EMA snapshots up to `step`; raises (before anything is sampled)
    when `config.eval.posthoc_sigma_rels` asks for a sweep and there are none."""
    directory = os.path.join(workdir, POSTHOC_DIR)
    steps = [e["step"] for e in read_manifest(directory) if e["step"] <= step]
    if not steps:
        raise ValueError(
            f"config.eval.posthoc_sigma_rels={list(config.eval.posthoc_sigma_rels)} needs post-hoc EMA "
            f"snapshots up to step {step} in {directory}, and there are none; train with "
            "--config.posthoc_ema.every=N (a multiple of config.train.steps_per_call), or leave "
            "config.eval.posthoc_sigma_rels empty."
        )
    return steps


def _posthoc_sweep(
    run: Experiment,
    state: Any,
    setting: EvalSetting,
    step: int,
    steps: list[int],
    workdir: str,
    extractor: Extractor,
    reference: ReferenceStats,
    pictures: dict[str, np.ndarray],
) -> dict[str, Any]:
    """The first setting's sample quality with each width of `config.eval.posthoc_sigma_rels`, its
    parameters reconstructed from the run's post-hoc EMA snapshots (`gl_jax.train.posthoc_ema`, EDM2
    sec. 3.2) at the last of the snapshot `steps` (`_snapshot_steps`) up to the checkpoint's `step`.
    Writes `eval/posthoc_ema.png` (FID against sigma_rel) and `eval/posthoc_ema.md` (the table); resumable
    per width like the settings."""
    config = run.config
    widths = tuple(float(w) for w in config.eval.posthoc_sigma_rels)
    directory = os.path.join(workdir, POSTHOC_DIR)
    at = max(steps)
    if at != step:
        log.warning(
            "The last post-hoc EMA snapshot up to step %d is at step %d; reconstructing there.", step, at
        )
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.params)
    trees = reconstruct_from_directory(directory, widths, target=target, step=at)
    out_dir = os.path.join(workdir, report_folder(config))
    rows = []
    for width, params in zip(widths, trees, strict=True):
        log.info("Evaluating setting %r with the post-hoc EMA of sigma_rel %g.", setting.name, width)
        fingerprint = {
            **_setting_fingerprint(config, setting, step),
            "posthoc_sigma_rel": width,
            "snapshot_steps": steps,
        }
        progress = Progress(os.path.join(out_dir, "progress", "posthoc_ema", f"{width:g}"), fingerprint)
        batches = _draw_and_extract(run, params, setting, progress, extractor)
        quality = _quality(config, batches, reference)
        rows.append(
            {"sigma_rel": width, **{k: quality.get(k) for k in ("fid", "kid_mean", "precision", "recall")}}
        )
    lines = [
        f"Post-hoc EMA at step {at} (snapshots of sigma_rel {list(posthoc_sigma_rels(config) or [])} every "
        f"{config.posthoc_ema.every} steps), setting {setting.name!r}, {config.eval.num_samples} samples:",
        "",
        "| sigma_rel | FID | KID | precision | recall |",
        "|---|---|---|---|---|",
    ]
    number = lambda v: "-" if v is None else f"{v:.4g}"
    for r in rows:
        cells = [f"{r['sigma_rel']:g}", *(number(r[k]) for k in ("fid", "kid_mean", "precision", "recall"))]
        lines.append("| " + " | ".join(cells) + " |")
    files.write_bytes(os.path.join(out_dir, "posthoc_ema.md"), ("\n".join(lines) + "\n").encode())
    pictures["eval/posthoc_ema"] = plots.save_metric_curve(
        os.path.join(out_dir, "posthoc_ema.png"),
        [r["sigma_rel"] for r in rows],
        [r["fid"] for r in rows],
        xlabel="post-hoc EMA sigma_rel",
        ylabel="FID",
        title=f"{config.data.name}, step {at}, {setting.name}",
    )
    log.info("Post-hoc EMA sweep:\n%s", "\n".join(lines))
    return {"setting": setting.name, "reconstructed_at_step": at, "snapshot_steps": steps, "widths": rows}


# The numbers of a setting's entry that become curves (`eval/<setting>/<name>`).
_CURVES = (
    "fid",
    "kid_mean",
    "precision",
    "recall",
    "inception_score",
    "nfe",
    "closer_than_training",
    "memorised_fraction",
)


def _usefulness_scalars(entry: dict) -> dict[str, float]:
    """`eval/cas`, `eval/real_accuracy` and `eval/augmentation/{real,real_and_synthetic}_<percent>pct`."""
    out = {"eval/cas": entry["cas"], "eval/real_accuracy": entry["real_accuracy"]}
    curve = entry["augmentation"]
    for fraction, real, mixed in zip(
        curve["fractions"], curve["real"], curve["real_and_synthetic"], strict=True
    ):
        percent = f"{100 * fraction:g}pct"
        out[f"eval/augmentation/real_{percent}"] = real
        out[f"eval/augmentation/real_and_synthetic_{percent}"] = mixed
    return out


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
    if report.get("usefulness"):
        scalars.update(_usefulness_scalars(report["usefulness"]))
    for row in (report.get("posthoc_ema") or {}).get("widths", []):
        if row["fid"] is not None:
            scalars[f"eval/posthoc_ema/fid_sigma_rel_{row['sigma_rel']:g}"] = row["fid"]
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
