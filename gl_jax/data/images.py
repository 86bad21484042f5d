"""Helpers shared by the image builders."""

from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

__all__ = ["encode_png", "labelled_image_info"]


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 `[H, W, 1]` or `[H, W, 3]` image (TFDS Image features take encoded bytes)."""
    if image.dtype != np.uint8:
        raise ValueError(f"Images must be uint8, got {image.dtype}.")
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def labelled_image_info(
    builder: tfds.core.DatasetBuilder, *, shape: tuple[int, int, int], num_classes: int, description: str
) -> tfds.core.DatasetInfo:
    """The `DatasetInfo` of a dataset of uint8 `image`s of `shape` with a `label` of `num_classes`."""
    return tfds.core.DatasetInfo(
        builder=builder,
        description=description,
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=shape),
                "label": tfds.features.ClassLabel(num_classes=num_classes),
            }
        ),
        supervised_keys=("image", "label"),
    )
