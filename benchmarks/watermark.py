"""Tree-Ring watermarks on the 8x8 digits: detection after perturbations, and FID with and without the key.

The model is the exact score of a Gaussian mixture fitted to the digits' training split, one diagonal
Gaussian per class with per-pixel standard deviations floored at 0.1 (as in notebooks/05_controllable.ipynb),
so what is measured is the watermark and the inversion, not a network's error. `--num` samples start from
watermarked noise (`gl_jax.samplers.watermark`, a "rings" key on the disc |k| <= `--radius` of the 8x8
spectrum) and as many ("unmarked") from prior noise; both are drawn with DDIM (eta = 0, `--steps` steps),
perturbed alike, inverted with `--steps` steps of DDIM inversion and tested for the key (Wen et al. 2023).
Both run on the "quadratic" grid, finer near the data (DDIM's, Song et al. 2021a, appendix D.2): on the
uniform grid 50 DDIM steps return the noise of unmarked samples with an RMS error of 0.23 (0.08 on the
quadratic grid), enough to make their p-values visibly non-uniform.

Columns:
  AUC           area under the ROC curve of the statistic eta (smaller: watermarked), watermarked against
                unmarked samples after the same perturbation.
  TPR@1%FPR     the fraction of watermarked samples flagged at the threshold that flags 1% of the unmarked
                ones (the paper's headline number).
  p<0.01        the fractions flagged by the test at level 0.01 with its null law (noncentral chi-squared),
                for watermarked (power) and unmarked (the test's size; 0.01 when the null law holds) samples.

Perturbations (in the data's [-1, 1] scale): none; "8-bit", the image clipped to [-1, 1] and rounded to 256
levels, which the Pillow ones below also do (about 29% of the mixture's sampled pixels lie outside [-1, 1],
mostly the background, which the data has at exactly -1); Gaussian noise of std sigma added; Pillow's
Gaussian blur of the given radius; a random square crop of the given side, resized back to 8x8
(bilinear); JPEG at the given quality. The paper's settings on 512x512 images (noise std 0.1 of [0, 1],
i.e. 0.2 here; blur radius 4; crop 75% and resize; JPEG 25) are scaled to 8x8 images where they are
spatial.

FID: the project's `gl_jax.eval.frechet.fid` of the watermarked and of unmarked samples (same number) against
the training images, on the features `gl_jax.eval.reference` uses for this data (the FID Inception's pool_3;
minutes on a CPU) and on the 64 raw pixel values (seconds); `--features` chooses.

Recorded run (2026-12-02, `--num 1000 --features raw`: 50 DDIM steps on the quadratic grid, radii 1 and 2,
77 s on 2 CPU cores shared with other jobs):

  radius 1 (5 of 64 coefficients)                       radius 2 (13 of 64 coefficients)
  perturbation      AUC  TPR@1%FPR  p<0.01 marked/unmarked   AUC  TPR@1%FPR  p<0.01 marked/unmarked
  none            1.000      1.000      1.000 / 0.005      1.000      1.000      1.000 / 0.014
  8-bit           0.972      0.353      0.000 / 0.000      0.999      0.996      0.087 / 0.000
  noise 0.05      0.999      0.979      0.973 / 0.008      1.000      1.000      1.000 / 0.016
  noise 0.2       0.800      0.091      0.066 / 0.006      0.872      0.294      0.116 / 0.005
  blur 0.5        0.915      0.174      0.000 / 0.000      0.946      0.326      0.000 / 0.000
  blur 1          0.757      0.088      0.000 / 0.000      0.556      0.002      0.000 / 0.000
  crop 7 + resize 0.635      0.010      0.000 / 0.000      0.451      0.002      0.000 / 0.000
  crop 6 + resize 0.510      0.025      0.000 / 0.000      0.423      0.000      0.000 / 0.000
  jpeg 75         0.940      0.294      0.000 / 0.000      0.985      0.688      0.000 / 0.000
  jpeg 25         0.725      0.072      0.000 / 0.000      0.761      0.155      0.000 / 0.000

  FID, raw pixels, 1000 samples: unmarked 2.17 (another draw 2.17), watermarked radius 1 4.71, radius 2 7.00.
  FID, Inception (`--num 500`, 18 minutes): unmarked 42.42 (another draw 43.44), watermarked radius 1 39.28,
  radius 2 37.78 (raw pixels in that run: 2.29, 2.36, 4.52, 6.86).

Unperturbed, the key is found in every watermarked sample, and the test holds its level on unmarked ones.
Noise is weathered; blur, crops and JPEG are not on 8x8 images: the mixture's per-pixel standard
deviations are as small as 0.1 (the background), so inversion, which whitens each pixel by its class's
standard deviation, turns a small change of a background pixel into a large change of the noise, and the
8-bit rendering alone (clipping the samples' background below -1) moves unmarked and marked statistics
alike, so the ROC still separates them while the p-values, calibrated for unperturbed samples, no longer
flag them. On the raw pixels the key costs FID, unlike on Stable Diffusion's 64x64x4 latents: it fixes 8%
(radius 1) or 20% (radius 2) of the spectrum of the 64 dimensions that carry everything. The Inception
features, made for 299x299 photographs and fed 8x8 digits upsampled, rank the same samples the other way
round (by more than the spread between two unmarked draws); on these images they are the weaker witness.

Run:  .venv/bin/python -m benchmarks.watermark [--num 1000] [--steps 50] [--radius 2] [--features raw]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageFilter

from gl_jax.analytic import GaussianMixture
from gl_jax.eval.detection import roc_auc, tpr_at_fpr
from gl_jax.eval.frechet import fid
from gl_jax.samplers import ddim
from gl_jax.samplers.watermark import TreeRing, detect, tree_ring_key, watermark_noise
from gl_jax.sde import VPSDE, GaussianDiffusion

SHAPE = (8, 8, 1)  # One digit image.
Perturbation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


# --- The model: one diagonal Gaussian per class. ---


def class_mixture(x: np.ndarray, labels: np.ndarray, *, min_std: float = 0.1) -> GaussianMixture:
    """One diagonal Gaussian per class fitted to flat images `x` `[N, D]`, weighted by class frequency."""
    classes = np.unique(labels)
    means = np.stack([x[labels == k].mean(0) for k in classes])  # [K, D]
    stds = np.stack([np.maximum(x[labels == k].std(0), min_std) for k in classes])
    weights = np.bincount(labels)[classes] / len(labels)
    return GaussianMixture(weights, means, stds)


def load_digits_train(data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The digits' training split: flat images `[N, 64]` in [-1, 1] and labels `[N]`."""
    from gl_jax.data.pipeline import load_arrays, preprocess_images
    from gl_jax.data.sources import open_dataset

    spec, sources = open_dataset("sklearn_digits", data_dir=data_dir)
    train = load_arrays(sources["train"], spec)
    return preprocess_images(train["x"], levels=spec.levels).reshape(len(train["x"]), -1), train["label"]


def image_score(mixture: GaussianMixture, sde: GaussianDiffusion):
    """The mixture's exact score on images `[B, H, W, C]` (the mixture is over the flat pixels)."""
    flat = mixture.score_fn(sde)
    return lambda x, t: flat(x.reshape(x.shape[0], -1), t).reshape(x.shape)


# --- Perturbations: images [N, H, W, C] in [-1, 1] -> perturbed images. ---


def _to_pil(image: np.ndarray) -> Image.Image:
    pixels = np.clip(np.round((image[..., 0] + 1.0) * 127.5), 0, 255).astype(np.uint8)  # [H, W]
    return Image.fromarray(pixels, mode="L")


def _from_pil(image: Image.Image) -> np.ndarray:
    return (np.asarray(image, np.float32) / 127.5 - 1.0)[..., None]  # [H, W, 1]


def _per_image(f: Callable[[Image.Image, np.random.Generator], Image.Image]) -> Perturbation:
    return lambda x, rng: np.stack([_from_pil(f(_to_pil(image), rng)) for image in x])


def gaussian_noise(sigma: float) -> Perturbation:
    """Adds N(0, sigma^2) to every pixel."""
    return lambda x, rng: x + sigma * rng.standard_normal(x.shape).astype(np.float32)


def gaussian_blur(radius: float) -> Perturbation:
    """Pillow's Gaussian blur of `radius` pixels."""
    return _per_image(lambda image, rng: image.filter(ImageFilter.GaussianBlur(radius=radius)))


def crop_resize(side: int) -> Perturbation:
    """A `side` x `side` crop at a random position, resized back to the image's size (bilinear)."""

    def f(image, rng):
        width, height = image.size
        left, top = rng.integers(0, width - side + 1), rng.integers(0, height - side + 1)
        crop = image.crop((left, top, left + side, top + side))
        return crop.resize((width, height), Image.Resampling.BILINEAR)

    return _per_image(f)


def jpeg(quality: int) -> Perturbation:
    """JPEG compression at `quality` (Pillow)."""

    def f(image, rng):
        del rng
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("L")

    return _per_image(f)


PERTURBATIONS: dict[str, Perturbation] = {
    "none": lambda x, rng: x,
    "8-bit": _per_image(lambda image, rng: image),
    "noise 0.05": gaussian_noise(0.05),
    "noise 0.2": gaussian_noise(0.2),
    "blur 0.5": gaussian_blur(0.5),
    "blur 1": gaussian_blur(1.0),
    "crop 7 + resize": crop_resize(7),
    "crop 6 + resize": crop_resize(6),
    "jpeg 75": jpeg(75),
    "jpeg 25": jpeg(25),
}


# --- The experiment. ---


def draw_samples(
    score_fn, sde: GaussianDiffusion, noise: jax.Array, *, steps: int, grid: str = "quadratic"
) -> np.ndarray:
    """DDIM (eta = 0) samples `[N, H, W, C]` from the starting noise `noise` `[N, H, W, C]`."""
    key = jax.random.key(0)  # Unused by DDIM with eta = 0 and x_init given.
    sample = jax.jit(lambda z: ddim(key, score_fn, sde, z.shape, steps=steps, x_init=z, grid=grid).x)
    return np.asarray(sample(noise))


def robustness_table(
    watermarked: np.ndarray,
    unmarked: np.ndarray,
    score_fn,
    sde: GaussianDiffusion,
    wm: TreeRing,
    *,
    steps: int,
    grid: str = "quadratic",
    perturbations: dict[str, Perturbation] = PERTURBATIONS,
    seed: int = 0,
) -> list[dict]:
    """One row per perturbation: AUC, TPR@1%FPR and the p < 0.01 rates of watermarked and unmarked samples."""
    test = jax.jit(lambda x: detect(score_fn, sde, x, wm, steps=steps, grid=grid)[:2])  # (statistic, p_value)
    rows = []
    for name, perturb in perturbations.items():
        # The same random crops and noise for both sets.
        x_w = perturb(watermarked, np.random.default_rng(seed))
        x_c = perturb(unmarked, np.random.default_rng(seed))
        (stat_w, p_w), (stat_c, p_c) = test(jnp.asarray(x_w)), test(jnp.asarray(x_c))
        stat_w, stat_c = np.asarray(stat_w), np.asarray(stat_c)
        rows.append(
            {
                "perturbation": name,
                "auc": roc_auc(-stat_c, -stat_w),
                "tpr_at_1pct_fpr": tpr_at_fpr(-stat_c, -stat_w, 0.01),
                "power_p01": float(np.mean(np.asarray(p_w) < 0.01)),
                "size_p01": float(np.mean(np.asarray(p_c) < 0.01)),
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        f"  {'perturbation':<18}{'AUC':>7}{'TPR@1%FPR':>11}{'p<0.01 (marked)':>17}{'p<0.01 (unmarked)':>19}",
    ]
    for r in rows:
        lines.append(
            f"  {r['perturbation']:<18}{r['auc']:>7.3f}{r['tpr_at_1pct_fpr']:>11.3f}"
            f"{r['power_p01']:>17.3f}{r['size_p01']:>19.3f}"
        )
    return "\n".join(lines)


def features_of(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """Images `[N, 8, 8, 1]` in [-1, 1] to FID features: the FID Inception's pool_3 or the raw pixels."""
    if kind == "raw":
        return lambda x: np.asarray(x, np.float64).reshape(len(x), -1)
    from gl_jax.eval.features import inception_extractor

    extract = inception_extractor(batch_size=100)
    return lambda x: extract(np.clip(x, -1.0, 1.0)).pool


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--num", type=int, default=1000, help="watermarked samples, and as many unmarked ones"
    )
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps to sample and to invert")
    parser.add_argument(
        "--grid", default="quadratic", help="the time grid of both (gl_jax.samplers.TIME_GRIDS)"
    )
    parser.add_argument("--radius", type=int, nargs="+", default=[1, 2], help="the keys' disc radii")
    parser.add_argument("--features", choices=("inception", "raw"), nargs="+", default=["raw", "inception"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: $TFDS_DATA_DIR)")
    args = parser.parse_args(argv)

    start = time.time()
    x_train, labels = load_digits_train(args.data_dir)
    sde = VPSDE()
    score = image_score(class_mixture(x_train, labels), sde)
    key_wm, key_w, key_c, key_c2 = jax.random.split(jax.random.key(args.seed), 4)
    shape = (args.num, *SHAPE)
    unmarked = draw_samples(score, sde, sde.prior_sample(key_c, shape), steps=args.steps, grid=args.grid)
    samples = {
        "unmarked": unmarked,
        "unmarked, another draw": draw_samples(
            score, sde, sde.prior_sample(key_c2, shape), steps=args.steps, grid=args.grid
        ),
    }
    for radius in args.radius:
        wm = tree_ring_key(key_wm, SHAPE, radius=radius)
        noise = watermark_noise(key_w, shape, wm, std=sde.prior_std())
        watermarked = draw_samples(score, sde, noise, steps=args.steps, grid=args.grid)
        samples[f"watermarked, radius {radius}"] = watermarked
        rows = robustness_table(
            watermarked, unmarked, score, sde, wm, steps=args.steps, grid=args.grid, seed=args.seed
        )
        print(
            f"Rings key, radius {radius} ({int(wm.mask.sum())} of 64 coefficients); DDIM {args.steps} "
            f"steps ({args.grid} grid); {args.num} watermarked and {args.num} unmarked samples:"
        )
        print(format_table(rows) + "\n")

    for kind in args.features:
        features = features_of(kind)
        reference = features(x_train.reshape(-1, *SHAPE))
        print(f"FID ({kind} features; {args.num} samples against the {len(x_train)} training images):")
        for name, x in samples.items():
            print(f"  {name:<24}{fid(features(x), reference):9.3f}")
    print(f"\n{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
