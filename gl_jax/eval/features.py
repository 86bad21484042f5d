"""FID Inception features of image arrays, datasets and samplers; dataset statistics cached to `.npz`.

The pieces `--mode stats` and `--mode eval` need:

    extractor = inception_extractor()                       # loads (or converts once) the weights
    ref = dataset_statistics(batches, extractor=extractor, cache_path="stats/cifar10_train.npz")
    scores = sampler_scores(sample_fn, key, extractor=extractor, num=50_000, batch_size=500, reference=ref)
    scores.fid, scores.inception_score                      # IS only when the weights have the softmax head
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import numpy as np

from gl_jax.eval.frechet import FeatureStats, StatsAccumulator, fid, load_stats, save_stats
from gl_jax.eval.inception import InceptionOutputs, InceptionV3, to_inception_input
from gl_jax.eval.inception_score import ISResult, inception_score
from gl_jax.eval.inception_weights import load_inception_params

__all__ = [
    "Extractor",
    "SamplerScores",
    "dataset_features",
    "dataset_statistics",
    "inception_extractor",
    "sampler_scores",
]

Extractor = Callable[[Any], InceptionOutputs]


def inception_extractor(
    params: Any = None, *, batch_size: int = 100, quantize: bool = True, head_bias: bool = False
) -> Extractor:
    """A function mapping images `[N, H, W, C]` to NumPy `InceptionOutputs(pool [N, 2048], logits)`.

    Preprocessing (`to_inception_input`: uint8, or floats in [-1, 1]; grayscale repeated to RGB; TF's
    bilinear resize to 299) and the network run under one `jax.jit`, on fixed batches of `batch_size`
    images (the last one padded), so it compiles once per image shape.

    Args:
      params: `InceptionV3` params; `load_inception_params()` (the cache, converted once) when None.
        With a `softmax` entry the outputs include logits, otherwise `logits` is None.
      batch_size: images per device call.
      quantize: round float images to 8-bit pixel values first (see `to_inception_input`).
      head_bias: add the softmax bias to the logits (off, as in the Inception Score's original code).
    """
    params = load_inception_params() if params is None else params
    net = InceptionV3(head="softmax" in params, head_bias=head_bias)

    @jax.jit
    def forward(params, images):  # params as an argument, not a 95 MB constant folded into the program
        return net.apply({"params": params}, to_inception_input(images, quantize=quantize))

    def extract(images) -> InceptionOutputs:
        images = np.asarray(images)
        if images.ndim == 3:  # [N, H, W]: grayscale without a channel axis
            images = images[..., None]
        n = len(images)
        outs = []
        for start in range(0, n, batch_size):
            batch = images[start : start + batch_size]
            pad = batch_size - len(batch)
            if pad:
                batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
            out = forward(params, batch)
            outs.append(jax.tree.map(lambda a, keep=batch_size - pad: np.asarray(a)[:keep], out))
        if not outs:
            raise ValueError("no images given")
        pool = np.concatenate([o.pool for o in outs])
        logits = np.concatenate([o.logits for o in outs]) if outs[0].logits is not None else None
        return InceptionOutputs(pool=pool, logits=logits)

    return extract


def _images_of(batch: Any) -> np.ndarray:
    if isinstance(batch, dict):  # The data pipeline's batches: {"x": images, "label": ...}.
        batch = batch["x"] if "x" in batch else batch["image"]
    return np.asarray(batch)


def dataset_features(
    batches: Iterable[Any], *, extractor: Extractor, max_images: int | None = None
) -> InceptionOutputs:
    """Features of every image in an iterable of batches (arrays, or dicts with `x` or `image`).

    Stops after `max_images` images when given (the iterable may be endless, like a training iterator).
    """
    pools, logits, n = [], [], 0
    for batch in batches:
        images = _images_of(batch)
        if max_images is not None:
            images = images[: max_images - n]
        out = extractor(images)
        pools.append(out.pool)
        if out.logits is not None:
            logits.append(out.logits)
        n += len(images)
        if max_images is not None and n >= max_images:
            break
    return InceptionOutputs(pool=np.concatenate(pools), logits=np.concatenate(logits) if logits else None)


def dataset_statistics(
    batches: Iterable[Any],
    *,
    extractor: Extractor | None = None,
    cache_path: str | os.PathLike | None = None,
    max_images: int | None = None,
) -> FeatureStats:
    """Mean and covariance of the pool_3 features of a dataset, read from / written to an `.npz` cache.

    Args:
      batches: an iterable of image batches (arrays `[B, H, W, C]`, or dicts with `x` or `image`), in
        [-1, 1] or uint8; each image once (an evaluation pass, not a shuffled, repeating train iterator,
        unless `max_images` bounds it).
      extractor: from `inception_extractor`; built with the default weights when None.
      cache_path: when the file exists its statistics are returned without reading `batches`; otherwise
        they are computed and written there (`save_stats` format: `mu`, `sigma`, `num`).
      max_images: stop after this many images.

    Returns:
      `FeatureStats(mu [2048], sigma [2048, 2048], num)` in float64.
    """
    if cache_path is not None and os.path.exists(cache_path):
        return load_stats(cache_path)
    extractor = extractor or inception_extractor()
    acc = StatsAccumulator()
    for batch in batches:
        images = _images_of(batch)
        if max_images is not None:
            images = images[: max_images - acc.num]
        acc.update(extractor(images).pool)
        if max_images is not None and acc.num >= max_images:
            break
    stats = acc.result()
    if cache_path is not None:
        save_stats(cache_path, stats)
    return stats


class SamplerScores(NamedTuple):
    """What `sampler_scores` measured on `num` samples.

    Attributes:
      stats: the samples' `FeatureStats` (save with `save_stats` to compare later).
      fid: FID against the reference statistics, or None without a reference.
      inception_score: `ISResult(mean, std)` over 10 splits, or None when the weights have no head.
    """

    stats: FeatureStats
    fid: float | None
    inception_score: ISResult | None


def sampler_scores(
    sample_fn: Callable[[jax.Array, int], Any],
    key: jax.Array,
    *,
    num: int,
    batch_size: int,
    extractor: Extractor | None = None,
    reference: FeatureStats | None = None,
    is_splits: int = 10,
) -> SamplerScores:
    """FID (and IS) of `num` images drawn from `sample_fn(key, n) -> [n, H, W, C]` in [-1, 1].

    Library-only, for scripts that hold a sampling function rather than a run (`benchmarks/families.py`);
    `--mode eval` (`gl_jax.eval.evaluate`) is the resumable job over a run's checkpoint. Both compute FID
    with `gl_jax.eval.frechet.fid`.

    Batch i is drawn with `jax.random.fold_in(key, i)`, so the images, and so the scores, depend only on
    `key`, `num` and `batch_size`. Features stream into float64 statistics; only the logits (4 KB per
    image) are kept, for the Inception Score's splits.

    Args:
      sample_fn: e.g. `lambda k, n: family.sample(params, k, n)`.
      key: PRNG key of the evaluation.
      num: number of samples (50k for published FID; fewer bias FID upwards).
      batch_size: samples per `sample_fn` call.
      extractor: from `inception_extractor`; built with the default weights when None.
      reference: the data's `FeatureStats` (`dataset_statistics`); FID is None without it.
      is_splits: splits of the Inception Score (Salimans et al. 2016 use 10).
    """
    extractor = extractor or inception_extractor()
    acc, logits = StatsAccumulator(), []
    for i, start in enumerate(range(0, num, batch_size)):
        images = np.asarray(sample_fn(jax.random.fold_in(key, i), min(batch_size, num - start)))
        out = extractor(images)
        acc.update(out.pool)
        if out.logits is not None:
            logits.append(out.logits)
    stats = acc.result()
    fid_value = fid(stats, reference) if reference is not None else None
    is_result = inception_score(np.concatenate(logits), splits=is_splits) if logits else None
    return SamplerScores(stats=stats, fid=fid_value, inception_score=is_result)
