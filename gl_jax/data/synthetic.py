"""Generated labelled images in the shapes of the standard datasets, for smoke runs that need no download.

`synthetic_images/<H>x<W>x<C>` (e.g. `synthetic_images/32x32x3`, CIFAR-10's shape) holds 10 classes of
smooth images: each class is an oriented sinusoidal grating with its own frequency, angle and colour, each
example a random phase and contrast plus a Gaussian blob at a random place. Nothing here is a benchmark;
it lets every published config train, sample and evaluate end to end on CPU in seconds, and a
class-conditional model has something class-dependent to learn.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from gl_jax.data.images import encode_png, labelled_image_info

__all__ = ["SyntheticImages", "SHAPES"]

SHAPES = {"32x32x3": (32, 32, 3), "28x28x1": (28, 28, 1), "8x8x1": (8, 8, 1), "64x64x3": (64, 64, 3)}
NUM_CLASSES = 10
SPLITS = {"train": (1024, 0), "test": (256, 1)}  # name -> (examples, seed)


def synthetic_image(rng: np.random.Generator, label: int, shape: tuple[int, int, int]) -> np.ndarray:
    """One uint8 image `[H, W, C]` of class `label`."""
    h, w, c = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")  # [H, W]
    angle = np.pi * label / NUM_CLASSES
    freq = 1.5 + 0.5 * (label % 4)
    grating = np.sin(np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 2 * np.pi))
    centre = rng.uniform(-0.6, 0.6, size=2)
    blob = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / 0.08)
    colour = 0.5 + 0.5 * np.cos(2 * np.pi * (label / NUM_CLASSES + np.arange(c) / 3))  # [C] in [0, 1]
    img = 0.5 + 0.35 * rng.uniform(0.5, 1.0) * grating[..., None] * colour + 0.3 * blob[..., None]
    return np.clip(np.round(255 * img), 0, 255).astype(np.uint8)


class SyntheticImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """`synthetic_images/<H>x<W>x<C>`: features `image` uint8 and `label` in 0..9; 1,024 train, 256 test."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in SHAPES]

    def _info(self) -> tfds.core.DatasetInfo:
        return labelled_image_info(
            self,
            shape=SHAPES[self.builder_config.name],
            num_classes=NUM_CLASSES,
            description="Generated class-dependent gratings and blobs in the shape of a standard dataset.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Generated: nothing to download.
        return {split: self._generate_examples(num, seed) for split, (num, seed) in SPLITS.items()}

    def _generate_examples(self, num: int, seed: int):
        shape = SHAPES[self.builder_config.name]
        rng = np.random.default_rng(seed)
        for i in range(num):
            label = int(i % NUM_CLASSES)
            yield i, {"image": encode_png(synthetic_image(rng, label, shape)), "label": label}
