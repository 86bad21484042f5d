"""Finding, preparing and opening datasets as random-access TFDS data sources (array_record, no TF).

Names: `sklearn_digits`, `fashion_mnist`, `toy/<distribution>`, `synthetic_images/<H>x<W>x<C>` (our
builders, prepared on first use from data that ships with a package or is generated), or any standard TFDS
name (`cifar10`, `celeb_a`, ...), which must already be prepared as array_record in the data_dir: nothing
is ever downloaded.
"""

from __future__ import annotations

import logging
import os
import re

import tensorflow_datasets as tfds

from gl_jax.data.fashion_mnist import FashionMnist
from gl_jax.data.sklearn_digits import SklearnDigits
from gl_jax.data.synthetic import SyntheticImages
from gl_jax.data.text import TextFile
from gl_jax.data.toy import Toy
from gl_jax.registry import nearest
from gl_jax.spec import DataSpec

log = logging.getLogger(__name__)

__all__ = ["BUILDERS", "DataSpec", "MissingDatasetError", "check_name", "resolve_data_dir", "open_dataset"]

BUILDERS = {
    "sklearn_digits": SklearnDigits,
    "fashion_mnist": FashionMnist,
    "toy": Toy,
    "synthetic_images": SyntheticImages,
    "text": TextFile,
}


class MissingDatasetError(FileNotFoundError):
    """A standard TFDS dataset is not prepared (as array_record) in the data_dir."""


def resolve_data_dir(data_dir: str | None = None) -> str:
    """The TFDS data_dir: the argument, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


# A standard TFDS name: `name`, `name/config`, each with an optional `:version`. No hub namespaces
# (`huggingface:...`, `kaggle:...`), which TFDS would fetch over the network, and no path parts.
_TFDS_NAME = re.compile(r"^[a-z0-9_]+(/[A-Za-z0-9_.+-]+)?(:[0-9.*]+)?$")
# `text/<name>`: a plain file stem, so the file read stays inside the text folder.
_TEXT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def _nearest(name: str, valid) -> str:
    near = nearest(name, valid, n=3)
    return f" Nearest: {near}." if near else ""


def check_name(name: str) -> None:
    """Refuses dataset names that would leave their place or reach the network, and unknown ones.

    Raises:
      ValueError: one line naming the problem, the valid names nearest to it, and the fix.
    """
    base, _, config = name.partition("/")
    ours = sorted(BUILDERS)
    if not name.strip():
        raise ValueError(f"config.data.name is empty; name a dataset, one of {ours} or a prepared TFDS name.")
    if base in BUILDERS:
        if base == "text":
            from gl_jax.data.text import parse_name

            if not _TEXT_NAME.match(parse_name(config)[0] if config else ""):
                raise ValueError(
                    f"config.data.name={name!r}: text/<name> takes a plain file name (letters, digits, '_' "
                    "and '-', optionally -<length>), read as <name>.txt from the text folder; no paths."
                )
            return
        configs = sorted(BUILDERS[base].builder_configs)
        if config and not configs:
            raise ValueError(f"config.data.name={name!r}: {base} has no configurations; use {base!r}.")
        if configs and config not in configs:
            what = f"Unknown configuration {config!r} of" if config else "Name a configuration of"
            raise ValueError(
                f"config.data.name={name!r}: {what} {base}; use '{base}/<name>' with <name> one of "
                f"{configs}.{_nearest(config, configs) if config else ''}"
            )
        return
    if not _TFDS_NAME.match(name):
        raise ValueError(
            f"config.data.name={name!r} is not a dataset name gl_jax reads: use one of {ours} or a standard "
            "TFDS name (name[/config][:version]) prepared in the data_dir; hub datasets ('namespace:name') "
            "and paths are refused, since nothing is fetched at run time."
        )
    known = tfds.list_builders(with_community_datasets=False)
    if base not in known:
        raise ValueError(
            f"Unknown dataset {name!r} (config.data.name).{_nearest(base, ours + list(known))} gl_jax's own: "
            f"{ours}; any other must be a TFDS dataset prepared as array_record in the data_dir."
        )


def _builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    check_name(name)
    base, _, config = name.partition("/")
    if base in BUILDERS:
        kwargs = {"config": config} if config else {}
        try:
            builder = BUILDERS[base](data_dir=data_dir, file_format="array_record", **kwargs)
            if not builder.is_prepared():
                log.info("Preparing %s once as array_record in %s.", name, builder.data_dir)
                tfds.disable_progress_bar()
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
                )
            )
        except PermissionError as e:
            raise PermissionError(
                f"Cannot prepare {name} in the data_dir {data_dir} ({e.strerror}: {e.filename}); point "
                "--config.data.data_dir (or $TFDS_DATA_DIR) at a folder you can write to, once."
            ) from None
        return builder
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    prepared = builder.is_prepared() and any(
        f.endswith(".array_record") or ".array_record-" in f for f in os.listdir(builder.data_dir)
    )
    if not prepared:
        raise MissingDatasetError(
            f"Dataset {name!r} is not prepared as array_record in {data_dir} (looked for "
            f"{builder.data_dir}). Nothing is downloaded at run time: on a machine with internet run "
            f"`tfds build {name} --file_format=array_record --data_dir={data_dir}` and copy the folder "
            "here, or point --config.data.data_dir (or $TFDS_DATA_DIR) at a data_dir that has it. "
            f"Built-in offline datasets: {sorted(BUILDERS)}."
        )
    return builder


def open_dataset(name: str, *, data_dir: str | None = None) -> tuple[DataSpec, dict]:
    """Prepares (if ours and not yet prepared) and opens a dataset.

    Args:
      name: dataset name, see the module docstring.
      data_dir: TFDS data_dir (see `resolve_data_dir`).

    Returns:
      `(spec, sources)`: a `DataSpec` and a dict of random-access data sources by split name.

    Raises:
      MissingDatasetError: a standard TFDS dataset is not prepared in the data_dir.
    """
    builder = _builder(name, resolve_data_dir(data_dir))
    features = builder.info.features
    split_sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
    num_classes = None
    if "label" in features and isinstance(features["label"], tfds.features.ClassLabel):
        num_classes = features["label"].num_classes
    if "image" in features:
        shape = tuple(features["image"].shape)
        if None in shape:
            raise ValueError(f"Dataset {name!r} has images of varying size {shape}; resize it first.")
        kind, levels = "image", getattr(type(builder), "LEVELS", 256)
    elif "x" in features:
        shape, kind, levels = tuple(features["x"].shape), "vector", None
    else:
        raise ValueError(f"Dataset {name!r} has neither an 'image' nor an 'x' feature: {list(features)}.")
    spec = DataSpec(name, kind, shape, levels, num_classes, split_sizes)
    return spec, builder.as_data_source()
