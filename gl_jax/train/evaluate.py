"""`evaluate(config, workdir)`: the `--mode eval` job, sample quality per sampler setting and bits/dim.

  gl-jax --config experiments/digits_vp.py --workdir runs/digits_vp --mode eval

`evaluate` restores the latest checkpoint (EMA weights when `config.sample.use_ema`) and, for every
sampler setting of `config.eval.settings`, draws `config.eval.num_samples` samples in batches, reporting
the NFE, FID against the reference statistics (computed first when missing), KID, precision/recall and,
when the Inception weights have their softmax head, the Inception Score; for diffusion families it also
reports the test-set bits/dim of the probability-flow ODE (`gl_jax.likelihood.ode_log_likelihood`, on
uniformly dequantized images). It writes `<workdir>/eval/report.json` and a sample grid
`<workdir>/eval/<setting>.png` per setting. The reference statistics come from
`gl_jax.train.reference_stats` (`--mode stats`); images are compared by their FID Inception features,
vector data by its coordinates.

Preemption: batch i of a setting is drawn with the key `fold_in(fold_in(fold_in(key(seed), EVAL), crc32(
setting name)), i)` (likewise for the likelihood's dequantization noise and probes), and after each batch
its features (or bits/dim) go to `<workdir>/eval/progress/`, followed by a small `state.json` holding the
number of finished batches. A rerun after a kill resumes at the next batch and reports exactly the numbers
of an uninterrupted evaluation; progress written for another checkpoint or other settings is discarded.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import json
import logging
import math
import os
import re
import shutil
import time
import zlib
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from gl_jax import files
from gl_jax.data.pipeline import load_arrays
from gl_jax.eval import plots
from gl_jax.eval.features import Extractor
from gl_jax.eval.frechet import FeatureStats, fid_from_stats, gaussian_statistics
from gl_jax.eval.inception_score import inception_score
from gl_jax.eval.mmd import kernel_inception_distance
from gl_jax.eval.precision_recall import precision_recall
from gl_jax.interrupts import handle_signals
from gl_jax.likelihood import bits_per_dim, ode_log_likelihood, uniform_dequantize
from gl_jax.samplers import SAMPLERS, THRESHOLDS
from gl_jax.train import loop
from gl_jax.train.reference_stats import ReferenceStats, compute_stats, feature_extractor, feature_kind
from gl_jax.train.validation import check_config
from gl_jax.train.workdir import WorkdirLock

__all__ = ["EvalSetting", "eval_settings", "evaluate"]

log = logging.getLogger(__name__)

# Folded into the run's seed first, so evaluation keys never coincide with the trainer's.
_EVAL_TAG = 0x45564C
_SETTING_KEYS = ("sampler", "steps", "options", "threshold")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# --- Sampler settings. ---


@dataclasses.dataclass(frozen=True)
class EvalSetting:
    """One way of sampling to evaluate.

    Attributes:
      name: the setting's name (report key, grid file name, part of the sampling keys).
      sampler: a name in `SAMPLERS`, or None for the family's configured sampler (`config.sample`).
      steps: the sampler's `steps` (None with `sampler=None`).
      options: the sampler's other keyword options, `(name, value)` pairs sorted by name.
      threshold: thresholding of the denoised estimate ("none", "static", "dynamic"), or None for
        `config.sample.threshold`.
    """

    name: str
    sampler: str | None
    steps: int | None
    options: tuple[tuple[str, Any], ...] = ()
    threshold: str | None = None


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


def _nearest(name: str, valid: Any) -> str:
    near = difflib.get_close_matches(str(name), list(valid), n=1)
    return f" Did you mean {near[0]!r}?" if near else ""


def _sampler_options(sampler: str, options: Any, where: str) -> tuple[tuple[str, Any], ...]:
    """Checks keyword options against the sampler's signature; returns them as sorted pairs."""
    accepted = [
        p.name
        for p in inspect.signature(SAMPLERS[sampler]).parameters.values()
        if p.kind == p.KEYWORD_ONLY and p.name not in ("steps", "x_init")
    ]
    options = dict(options or {})
    for key in options:
        if key not in accepted:
            raise ValueError(
                f"Unknown option '{where}.{key}' for sampler {sampler!r}.{_nearest(key, accepted)} "
                f"Valid options: {sorted(accepted)}."
            )
    return tuple(sorted((k, _hashable(v)) for k, v in options.items()))


def eval_settings(config: ml_collections.ConfigDict) -> list[EvalSetting]:
    """The settings of `config.eval.settings`, checked; one setting `"sample"` when it is empty.

    Raises:
      ValueError: a bad name, a missing or unknown key, an unknown sampler (the valid ones named), an
        unknown sampler option, or steps < 1.
    """
    settings = config.eval.settings
    if not settings:
        return [EvalSetting("sample", None, None)]
    out = []
    for name, setting in settings.items():
        where = f"config.eval.settings.{name}"
        if not _NAME.match(name):
            raise ValueError(f"Setting name {name!r} must be letters, digits, '_', '-' or '.' (a file name).")
        if not isinstance(setting, ml_collections.ConfigDict | dict):
            raise ValueError(f"{where} must be a dict with keys {list(_SETTING_KEYS)}, got {setting!r}.")
        for key in setting:
            if key not in _SETTING_KEYS:
                raise ValueError(
                    f"Unknown config key '{where}.{key}'.{_nearest(key, _SETTING_KEYS)} "
                    f"Valid keys: {list(_SETTING_KEYS)}."
                )
        if "sampler" not in setting or "steps" not in setting:
            raise ValueError(f"{where} needs 'sampler' and 'steps' (and optionally 'options', 'threshold').")
        sampler = setting["sampler"]
        if sampler not in SAMPLERS:
            raise ValueError(
                f"Unknown sampler {sampler!r} in {where}.sampler; choose one of {sorted(SAMPLERS)}."
                f"{_nearest(sampler, SAMPLERS)}"
            )
        steps = setting["steps"]
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{where}.steps must be an integer >= 1, got {steps!r}.")
        options = _sampler_options(sampler, setting.get("options"), f"{where}.options")
        threshold = setting.get("threshold")
        if threshold is not None and threshold not in THRESHOLDS:
            raise ValueError(
                f"Unknown threshold {threshold!r} in {where}.threshold; choose one of {THRESHOLDS}."
                f"{_nearest(threshold, THRESHOLDS)}"
            )
        out.append(EvalSetting(name, sampler, steps, options, threshold))
    return out


def _check_eval_config(config: ml_collections.ConfigDict) -> None:
    check_config(config, mode="eval")
    if config.distributed.enabled:
        raise ValueError(
            "--mode eval runs on one process; pass --config.distributed.enabled=False (it reads the "
            "checkpoints of multi-process runs)."
        )


# --- Resumable per-batch progress. ---


def _canonical(value: Any) -> Any:
    """A JSON round trip, so fingerprints compare equal however their tuples and lists were written."""
    return json.loads(json.dumps(value))


class _Progress:
    """Per-batch results of one evaluation unit in a folder, with a `state.json` naming how many are done.

    Batch i goes to `batch_<i>.npz` before `state.json` counts it, each written through a rename, so a
    kill at any point leaves a consistent folder (a batch file not yet counted is recomputed, identically).
    Progress with another fingerprint (checkpoint, settings, seed) is discarded.
    """

    def __init__(self, folder: str, fingerprint: dict):
        self.folder = folder
        self.fingerprint = _canonical(fingerprint)
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


def _unit_key(seed: int, name: str) -> jax.Array:
    """The base key of an evaluation unit: a function of the seed and the unit's name only."""
    key = jax.random.fold_in(jax.random.key(seed), _EVAL_TAG)
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


# --- Sample quality. ---


def _resolve(run: loop.Run, setting: EvalSetting) -> EvalSetting:
    """The setting with `config.sample`'s sampler filled in for `sampler=None` where the family can be
    given a sampler; a family without `sample_with` takes no samplers.

    Raises:
      ValueError: the setting names a sampler but the family has only its own `sample`.
    """
    config = run.config
    if not hasattr(run.family, "sample_with"):
        if setting.sampler is not None or (setting.threshold or config.sample.threshold) != "none":
            raise ValueError(
                f"Family {config.family!r} samples one way only; leave config.eval.settings empty and "
                f"config.sample.threshold 'none' (setting {setting.name!r})."
            )
        return setting
    threshold = setting.threshold if setting.threshold is not None else config.sample.threshold
    if threshold != "none" and run.spec.kind != "image":
        raise ValueError(
            f"Setting {setting.name!r} has threshold {threshold!r}, which keeps samples in the image range "
            f"[-1, 1]; dataset {run.spec.name!r} is not images, so use threshold 'none'."
        )
    if setting.sampler is not None:
        return dataclasses.replace(setting, threshold=threshold)
    options = _sampler_options(config.sample.sampler, config.sample.options, "config.sample.options")
    return dataclasses.replace(
        setting,
        sampler=config.sample.sampler,
        steps=config.sample.steps,
        options=options,
        threshold=threshold,
    )


def _sample_fn(run: loop.Run, setting: EvalSetting) -> Callable[[Any, jax.Array, int], tuple[Any, Any]]:
    """`fn(params, key, num) -> (samples, nfe or None)` for a resolved setting, compiled once."""
    family = run.family
    if setting.sampler is None:
        fn = jax.jit(family.sample, static_argnums=(2,))
        return lambda params, key, num: (fn(params, key, num), None)
    bound = functools.partial(
        family.sample_with,
        sampler=setting.sampler,
        steps=setting.steps,
        options=setting.options,
        threshold=setting.threshold,
    )
    fn = jax.jit(bound, static_argnums=(2,))
    return lambda params, key, num: tuple(fn(params, key, num))


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
    run: loop.Run,
    params: Any,
    setting: EvalSetting,
    progress: _Progress,
    extractor: Extractor,
) -> list[dict[str, np.ndarray]]:
    """Draws the setting's samples batch by batch (resuming), saving each batch's features."""
    e = run.config.eval
    num, batch = e.num_samples, e.batch_size
    num_batches = math.ceil(num / batch)
    sample = _sample_fn(run, setting)
    key = _unit_key(run.config.seed, setting.name)
    bar = tqdm.tqdm(
        total=num,
        initial=min(progress.done * batch, num),
        unit="sample",
        desc=setting.name,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    start = time.perf_counter() - progress.seconds
    with bar:
        for i in range(progress.done, num_batches):
            count = min(batch, num - i * batch)
            # Always a full batch (one compiled shape); the last one is cut to what is left.
            x, nfe = sample(params, jax.random.fold_in(key, i), batch)
            x = np.asarray(jax.device_get(x))[:count]  # [count, *data_shape]
            out = extractor(x)
            arrays = {"pool": out.pool, "samples": x[: max(0, e.grid_size - i * batch)]}
            if out.logits is not None:
                arrays["logits"] = out.logits
            if nfe is not None:
                arrays["nfe"] = np.asarray(jax.device_get(nfe), np.int64)
            progress.save(i, arrays, time.perf_counter() - start)
            bar.update(count)
    return progress.load()


def _fid(features: np.ndarray, reference: FeatureStats) -> float:
    """FID of sample features `[N, D]` against the reference statistics (Heusel et al. 2017, eq. 6).

    With N <= D the samples' covariance S = A^T A / (N - 1) (A the centred features `[N, D]`) is
    singular, which sends `fid_from_stats` down two D x D eigensolves (many seconds for D = 2048 on a
    CPU). But S_r S = (S_r A^T)(A / (N - 1)) has the nonzero eigenvalues of the N x N matrix
    A S_r A^T / (N - 1) (XY and YX share them), which is symmetric PSD: tr((S_r S)^(1/2)) is the sum of
    the square roots of its eigenvalues, from one N x N eigensolve, exactly, with no rounding of the
    D - N zero eigenvalues.
    """
    f = np.asarray(features, np.float64)
    n, d = f.shape
    if n > d:
        return fid_from_stats(gaussian_statistics(f), reference)
    mu = f.mean(axis=0)
    a = f - mu  # [N, D]
    m = a @ reference.sigma @ a.T / (n - 1)  # [N, N]
    trace_sqrt = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None))))
    diff = mu - reference.mu
    trace_s = float(np.sum(a * a)) / (n - 1)
    return float(diff @ diff + trace_s + np.trace(reference.sigma) - 2.0 * trace_sqrt)


def _quality(
    config: ml_collections.ConfigDict, batches: list[dict[str, np.ndarray]], reference: ReferenceStats
) -> dict[str, Any]:
    """FID, KID, precision/recall and IS of the samples' features against the reference."""
    e = config.eval
    pool = np.concatenate([b["pool"] for b in batches]).astype(np.float64)  # [N, D]
    out: dict[str, Any] = {"fid": _fid(pool, reference.stats)}
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


def _bits_per_dim(run: loop.Run, params: Any, step: int, folder: str) -> dict[str, Any] | None:
    """Test-set bits/dim by the probability-flow ODE, resumable; None when it does not apply."""
    config, family, spec = run.config, run.family, run.spec
    e = config.eval
    if not e.bpd_examples:
        return None
    # A score and a process on the data itself (not, say, on an autoencoder's latents).
    on_data = getattr(family, "data_shape", None) == tuple(spec.shape)
    if not (hasattr(family, "score_fn") and hasattr(family, "sde") and on_data):
        log.info("Family %r has no score of the data: no bits/dim.", config.family)
        return None
    if run.eval_source is None:
        log.warning("No split %r for bits/dim; skipped.", config.data.eval_split)
        return None
    arrays = load_arrays(run.eval_source, spec)
    num = min(e.bpd_examples, len(arrays["x"]))
    batch = e.batch_size
    fingerprint = {
        "checkpoint_step": step,
        "use_ema": bool(config.sample.use_ema),
        "seed": config.seed,
        "split": config.data.eval_split,
        "examples": num,
        "batch_size": batch,
        "options": {"trace": e.bpd_trace, "rtol": e.bpd_rtol, "atol": e.bpd_atol},
    }
    progress = _Progress(folder, fingerprint)
    num_dims = math.prod(spec.shape)
    image = spec.kind == "image"
    conditional = bool(getattr(family, "num_classes", 0))

    @jax.jit
    def likelihood(params, key, x, y):
        key_u, key_probe = jax.random.split(key)
        if image:  # Integer pixels k -> x = 2 (k + u) / levels - 1 (Theis et al. 2016).
            x = uniform_dequantize(key_u, x, levels=spec.levels)
        score = family.score_fn(params, y) if conditional else family.score_fn(params)
        result = ode_log_likelihood(
            key_probe,
            score,
            family.sde,
            x.astype("float32"),
            trace=e.bpd_trace,
            rtol=e.bpd_rtol,
            atol=e.bpd_atol,
        )
        if image:
            bpd = bits_per_dim(result.logp, num_dims=num_dims, levels=spec.levels)
        else:  # Continuous data: -log2 p / D, no discretisation offset.
            bpd = bits_per_dim(result.logp, num_dims=num_dims, offset=0.0)
        return bpd, result.nfe

    key = _unit_key(config.seed, "bits_per_dim")
    num_batches = math.ceil(num / batch)
    bar = tqdm.tqdm(
        total=num,
        initial=min(progress.done * batch, num),
        unit="example",
        desc="bits/dim",
        dynamic_ncols=True,
        mininterval=1.0,
    )
    start = time.perf_counter() - progress.seconds
    with bar:
        for i in range(progress.done, num_batches):
            # A full batch (one compiled shape): the last one wraps around to the first examples.
            idx = np.arange(i * batch, (i + 1) * batch) % num  # [batch]
            count = min(batch, num - i * batch)
            y = arrays["label"][idx] if conditional else None
            bpd, nfe = likelihood(params, jax.random.fold_in(key, i), arrays["x"][idx], y)
            arrays_i = {"bpd": np.asarray(bpd, np.float64)[:count], "nfe": np.asarray(nfe, np.int64)}
            progress.save(i, arrays_i, time.perf_counter() - start)
            bar.update(count)
    batches = progress.load()
    bpd = np.concatenate([b["bpd"] for b in batches])  # [num]
    nfe = np.array([int(b["nfe"]) for b in batches])
    return {
        "bits_per_dim": float(np.mean(bpd)),
        "bits_per_dim_sem": float(np.std(bpd, ddof=1) / np.sqrt(len(bpd))) if len(bpd) > 1 else None,
        "examples": int(len(bpd)),
        "split": config.data.eval_split,
        "nfe": float(np.mean(nfe)),
        "dequantized": image,
        "conditional": conditional,  # log p(x | label) for class-conditional models.
        "seconds": round(progress.seconds, 3),
    }


# --- The job. ---


def _restore_params(run: loop.Run, workdir: str) -> tuple[Any, int]:
    """The latest checkpoint's EMA (or raw) parameters and its step."""
    state = loop.restore_for_reading(run, workdir, purpose="evaluate")
    return loop.sampling_params(state, run.config), int(state.step)


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
        workdir = loop.reading_workdir(workdir, purpose="evaluate")
        # Two evaluations of one run would share progress files: one at a time (training may go on).
        with WorkdirLock(os.path.join(workdir, "eval"), purpose="evaluation"):
            return _evaluate(config, workdir, settings)


def _evaluate(config: ml_collections.ConfigDict, workdir: str, settings: list[EvalSetting]) -> dict:
    run = loop.Run(config, load_train=False)
    settings = [_resolve(run, s) for s in settings]
    params, step = _restore_params(run, workdir)
    out_dir = os.path.join(workdir, "eval")
    extractor = feature_extractor(config, run.spec)
    reference = compute_stats(config, extractor=extractor)
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
    }
    report_path = os.path.join(out_dir, "report.json")
    for setting in settings:
        log.info("Evaluating setting %r.", setting.name)
        folder = os.path.join(out_dir, "progress", "settings", setting.name)
        progress = _Progress(folder, _setting_fingerprint(config, setting, step))
        batches = _draw_and_extract(run, params, setting, progress, extractor)
        start = time.perf_counter()
        entry: dict[str, Any] = {
            "sampler": setting.sampler,
            "steps": setting.steps,
            "options": _canonical(dict(setting.options)),
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
            plots.save_samples(os.path.join(out_dir, f"{setting.name}.png"), np.concatenate(shown))
        report["settings"][setting.name] = entry
        files.write_json(report_path, report)
        log.info("%s: %s", setting.name, {k: v for k, v in entry.items() if k != "options"})
    bpd = _bits_per_dim(run, params, step, os.path.join(out_dir, "progress", "bits_per_dim"))
    report["bits_per_dim"] = bpd
    for entry in report["settings"].values():
        entry["bits_per_dim"] = bpd["bits_per_dim"] if bpd else None
    files.write_json(report_path, report)
    return report
