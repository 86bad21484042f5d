"""Helpers shared by the image builders."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["encode_png"]


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 `[H, W, 1]` or `[H, W, 3]` image (TFDS Image features take encoded bytes)."""
    if image.dtype != np.uint8:
        raise ValueError(f"Images must be uint8, got {image.dtype}.")
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()
