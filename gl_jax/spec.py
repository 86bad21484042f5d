"""`DataSpec`: what the layers above the data know of a dataset (families are built from it, the data
pipeline produces batches that fit it)."""

from __future__ import annotations

import dataclasses

__all__ = ["DataSpec"]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What the rest of the code needs to know about a dataset.

    Attributes:
      name: the dataset name as configured.
      kind: `"image"` (uint8 images, scaled to [-1, 1] by the pipeline) or `"vector"` (float features).
      shape: shape of one example's `x` after preprocessing, e.g. `(8, 8, 1)` or `(2,)`.
      levels: number of pixel levels of images (17 for sklearn digits, 256 for 8-bit), None for vectors.
      num_classes: number of labels, or None when the dataset has none.
      split_sizes: examples per split.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    levels: int | None
    num_classes: int | None
    split_sizes: dict[str, int]
