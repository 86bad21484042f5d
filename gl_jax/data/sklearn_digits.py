"""The 1,797 8x8 handwritten digits that ship inside scikit-learn (UCI optdigits), as a TFDS dataset.

Pixel values are the original 17 levels 0..16 (not rescaled); `LEVELS` tells the pipeline how to map
them to [-1, 1]. The split is fixed: a seeded permutation puts 360 images in `test` and 1,437 in `train`.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from gl_jax.data.images import encode_png, labelled_image_info

__all__ = ["SklearnDigits"]

NUM_TEST = 360


class SklearnDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """`sklearn_digits`: features `image` uint8 `[8, 8, 1]` in 0..16 and `label` in 0..9."""

    VERSION = tfds.core.Version("1.0.0")
    LEVELS = 17

    def _info(self) -> tfds.core.DatasetInfo:
        return labelled_image_info(
            self,
            shape=(8, 8, 1),
            num_classes=10,
            description="scikit-learn's 8x8 digits (UCI optdigits), 17 grey levels.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The data ships with scikit-learn.
        from sklearn.datasets import load_digits

        digits = load_digits()
        order = np.random.default_rng(0).permutation(len(digits.images))
        return {
            "train": self._generate_examples(digits, order[NUM_TEST:]),
            "test": self._generate_examples(digits, order[:NUM_TEST]),
        }

    def _generate_examples(self, digits, indices):
        for i in indices:
            image = digits.images[i].astype(np.uint8)[..., None]  # [8, 8, 1], 0..16
            yield int(i), {"image": encode_png(image), "label": int(digits.target[i])}
