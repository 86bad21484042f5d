"""Reference statistics for FID, KID and precision/recall: `compute_stats(config)`, the `--mode stats` job.

  gl-jax --config experiments/digits_vp.py --mode stats

Fits a Gaussian (mu, sigma) to the FID Inception's pool_3 features of a split of the data
(`config.stats.split`, the train split by default) and keeps the features of its first
`config.stats.num_features` images for KID and precision/recall, all in one `.npz` (`stats_path`, by
default in the TFDS data_dir), which later calls, and `--mode eval`, read instead of recomputing. Vector
data (the toy distributions) has no Inception features: the same metrics use the raw vectors.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, NamedTuple

import ml_collections
import numpy as np
import tqdm

from gl_jax import files
from gl_jax.data.pipeline import load_arrays, make_dataset
from gl_jax.data.sources import resolve_data_dir
from gl_jax.eval.features import Extractor, inception_extractor
from gl_jax.eval.frechet import FeatureStats, StatsAccumulator
from gl_jax.eval.inception import InceptionOutputs
from gl_jax.spec import DataSpec
from gl_jax.train.experiment import Experiment
from gl_jax.train.workdir import WorkdirError

__all__ = ["ReferenceStats", "compute_stats", "feature_extractor", "feature_kind", "stats_path"]

log = logging.getLogger(__name__)


class ReferenceStats(NamedTuple):
    """The data side of FID, KID and precision/recall.

    Attributes:
      stats: `FeatureStats(mu [D], sigma [D, D], num)` of the split's features.
      features: `[M, D]` float32 features of the split's first M images (M <= `config.stats.num_features`).
      path: the `.npz` they were read from or written to.
    """

    stats: FeatureStats
    features: np.ndarray
    path: str


def feature_kind(spec: DataSpec) -> str:
    """The features compared: "inception" for images, "raw" for vector data (its own coordinates)."""
    return "inception" if spec.kind == "image" else "raw"


def stats_path(config: ml_collections.ConfigDict, spec: DataSpec) -> str:
    """Where the reference statistics live: `config.stats.path`, else a name in the TFDS data_dir.

    The default is `<data_dir>/gl_jax_stats/<dataset, "/" as "_">_<split>[_first<N>]_<inception|raw>.npz`,
    `_first<N>` when `config.stats.max_images` limits the images.
    """
    if config.stats.path:
        return os.path.abspath(os.path.expanduser(config.stats.path))
    limit = f"_first{config.stats.max_images}" if config.stats.max_images else ""
    name = f"{spec.name.replace('/', '_')}_{config.stats.split}{limit}_{feature_kind(spec)}.npz"
    return os.path.join(resolve_data_dir(config.data.data_dir or None), "gl_jax_stats", name)


def _raw_features(x: Any) -> InceptionOutputs:
    """Vector data's own coordinates as its features, `[N, D]`."""
    x = np.asarray(x, np.float32)
    return InceptionOutputs(pool=x.reshape(len(x), -1), logits=None)


def feature_extractor(config: ml_collections.ConfigDict, spec: DataSpec) -> Extractor:
    """The FID Inception (batches of `config.eval.batch_size`) for images, the identity for vectors."""
    if spec.kind != "image":
        return _raw_features
    return inception_extractor(batch_size=config.eval.batch_size)


def _stats_meta(config: ml_collections.ConfigDict, spec: DataSpec) -> dict:
    """What the statistics are of, stored with them: a cache of other data is refused, not used."""
    return {
        "dataset": spec.name,
        "split": config.stats.split,
        "features": feature_kind(spec),
        "max_images": int(config.stats.max_images),
    }


def _load_reference(path: str, meta: dict) -> ReferenceStats:
    """Reads a file `compute_stats` wrote, checking that it is of the data `meta` describes.

    Raises:
      files.UnreadableFile: the file does not read back (it is recomputed).
      ValueError: it holds statistics of other data, or no features (named, with the fix).
    """
    f = files.read_npz(path)
    try:
        saved = json.loads(str(f["meta"])) if "meta" in f else None
    except ValueError as e:
        raise files.UnreadableFile(f"its metadata is not JSON ({e})") from None
    if saved is not None and saved != meta:
        raise ValueError(
            f"The statistics in {path} are of {saved}, not of {meta}; delete the file to recompute them "
            "or point config.stats.path elsewhere."
        )
    if "features" not in f:
        raise ValueError(
            f"{path} holds statistics but no features for KID and precision/recall; delete it (it is "
            "recomputed) or point config.stats.path at a file written by --mode stats."
        )
    if missing := {"mu", "sigma", "num"} - set(f):
        raise files.UnreadableFile(f"it lacks {sorted(missing)}")
    stats = FeatureStats(
        mu=np.asarray(f["mu"], np.float64), sigma=np.asarray(f["sigma"], np.float64), num=int(f["num"])
    )
    return ReferenceStats(stats, np.asarray(f["features"], np.float32), path)


def compute_stats(
    config: ml_collections.ConfigDict, *, extractor: Extractor | None = None, run: Experiment | None = None
) -> ReferenceStats:
    """Reference statistics of `config.stats.split`, read from `stats_path` or computed and written there.

    Images are taken in the split's order, scaled to [-1, 1] without dequantization (and quantized to 8-bit
    pixels by the extractor, as samples are), in batches of `config.eval.batch_size`; the statistics
    accumulate batch by batch exactly as in `gl_jax.eval.features.dataset_statistics`.

    Args:
      config: an experiment config; reads `config.data` and `config.stats`.
      extractor: the feature extractor; the FID Inception (raw vectors for vector data) when None.
      run: the job's `Experiment` (its data spec and sources); made from `config` when None.

    Returns:
      `ReferenceStats(stats, features, path)`.

    Raises:
      ValueError: the split does not exist, or the cached file was computed for other data.
    """
    if config.stats.num_features < 2:
        raise ValueError(
            f"config.stats.num_features must be >= 2 (KID needs pairs), got {config.stats.num_features}."
        )
    run = run if run is not None else Experiment(config, load_train=False)
    spec, sources = run.spec, run.sources
    path = stats_path(config, spec)
    meta = _stats_meta(config, spec)
    if os.path.exists(path):
        try:
            reference = _load_reference(path, meta)
        except files.UnreadableFile as e:
            # A cache of our own making (the data is still there): set it aside and compute it again.
            aside = f"{path}.corrupt"
            log.warning(
                "The reference statistics in %s are unreadable (%s); moving them to %s and computing them "
                "again.",
                path,
                e,
                aside,
            )
            os.replace(path, aside)
        else:
            log.info("Reusing the reference statistics in %s.", path)
            return reference
    split = config.stats.split
    if split not in sources:
        raise ValueError(
            f"config.stats.split={split!r} is not a split of {spec.name!r}; choose one of {sorted(sources)}."
        )
    arrays = load_arrays(sources[split], spec)
    if config.stats.max_images:
        arrays = {k: v[: config.stats.max_images] for k, v in arrays.items()}
    num = len(arrays["x"])
    batch = min(config.eval.batch_size, num)
    ds = make_dataset(
        arrays, spec, batch_size=batch, seed=0, shuffle=False, repeat=False, drop_remainder=False
    )
    extractor = extractor or feature_extractor(config, spec)
    acc, kept, num_kept = StatsAccumulator(), [], 0
    bar = tqdm.tqdm(
        total=num, unit="img", desc=f"stats {spec.name}:{split}", dynamic_ncols=True, mininterval=1.0
    )
    with bar:
        for i in range(len(ds)):
            out = extractor(ds[i]["x"])
            acc.update(out.pool)
            if num_kept < config.stats.num_features:
                kept.append(out.pool[: config.stats.num_features - num_kept])
                num_kept += len(kept[-1])
            bar.update(len(out.pool))
    stats = acc.result()
    features = np.concatenate(kept).astype(np.float32)  # [M, D]
    try:
        files.save_npz(
            path,
            mu=stats.mu,
            sigma=stats.sigma,
            num=np.int64(stats.num),
            features=features,
            meta=np.asarray(json.dumps(meta)),
        )
    except OSError as e:
        raise WorkdirError(
            f"Cannot write the reference statistics to {path} ({e.strerror}); set config.stats.path to a "
            "file you can write."
        ) from None
    return ReferenceStats(stats, features, path)
