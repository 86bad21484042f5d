"""Offline datasets through TFDS (array_record, read with `tfds.data_source`) and grain pipelines."""

from gl_jax.data.pipeline import load_arrays, make_dataset, make_iterator, preprocess_images
from gl_jax.data.sources import BUILDERS, DataSpec, MissingDatasetError, open_dataset, resolve_data_dir

__all__ = [
    "BUILDERS",
    "DataSpec",
    "MissingDatasetError",
    "load_arrays",
    "make_dataset",
    "make_iterator",
    "open_dataset",
    "preprocess_images",
    "resolve_data_dir",
]
