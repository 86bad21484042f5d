"""Fashion-MNIST (Xiao et al. 2017) from the files Debian's `dataset-fashion-mnist` package installs.

`apt-get install dataset-fashion-mnist` puts the four IDX files under `/usr/share/datasets/fashion-mnist`;
this builder converts them to array_record once. Set `$GL_JAX_FASHION_MNIST_DIR` (or pass `source_dir`)
to read the same files from elsewhere.
"""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from gl_jax.data.images import encode_png, labelled_image_info

__all__ = ["FashionMnist", "read_idx", "DEFAULT_SOURCE_DIR"]

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads a (gzipped) IDX file (LeCun et al. 1998's MNIST format) as a NumPy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims}, found {array.size} values.")
    return array.reshape(dims)


class FashionMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """`fashion_mnist`: `image` uint8 `[28, 28, 1]`, `label` in 0..9; 60,000 train and 10,000 test."""

    VERSION = tfds.core.Version("1.0.0")
    LEVELS = 256

    def __init__(self, *, source_dir: str | None = None, **kwargs):
        self._source_dir = source_dir or os.environ.get("GL_JAX_FASHION_MNIST_DIR", DEFAULT_SOURCE_DIR)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return labelled_image_info(
            self,
            shape=(28, 28, 1),
            num_classes=10,
            description="Fashion-MNIST, read from Debian's dataset-fashion-mnist files.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The files come from a Debian package, not a download.
        root = pathlib.Path(self._source_dir)
        missing = [name for pair in _FILES.values() for name in pair if not (root / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"Fashion-MNIST files {missing} not found in {root}. Install them with "
                "`apt-get install dataset-fashion-mnist`, or set $GL_JAX_FASHION_MNIST_DIR to a folder "
                "holding the IDX files."
            )
        return {split: self._generate_examples(root, *files) for split, files in _FILES.items()}

    def _generate_examples(self, root: pathlib.Path, images_file: str, labels_file: str):
        images = read_idx(root / images_file)
        labels = read_idx(root / labels_file)
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise ValueError(f"Unexpected Fashion-MNIST shapes {images.shape} and {labels.shape}.")
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": encode_png(image[..., None]), "label": int(label)}
