"""Any text file as a TFDS dataset of fixed-length blocks of UTF-8 bytes, for character-level models.

`text/<name>` reads `<name>.txt` from the TFDS manual folder, `<data_dir>/downloads/manual/` (or from
`$GL_JAX_TEXT_DIR`), and writes it once as array_record: the last `test_fraction` of the bytes is the
`test` split, the rest `train`, each cut into non-overlapping blocks of `length` bytes (256 by default;
`text/<name>-<length>`, e.g. `text/shakespeare-128`, picks another). Each example is `x`, int32 `[length]`
in 0..255. Bytes rather than characters: any file works with one fixed 256-way vocabulary, and for ASCII
text bits per byte are bits per character.

The prepared data is not refreshed when the file changes: delete `<data_dir>/text_file/<name>` to re-read it.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["TextFile", "parse_name", "DEFAULT_LENGTH"]

DEFAULT_LENGTH = 256


def parse_name(config_name: str) -> tuple[str, int]:
    """`"<name>"` or `"<name>-<length>"` -> (file stem, block length)."""
    stem, sep, tail = config_name.rpartition("-")
    if sep and tail.isdigit() and stem:
        return stem, int(tail)
    return config_name, DEFAULT_LENGTH


class TextFile(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """`text/<name>[-<length>]`: blocks of bytes of `<name>.txt`, feature `x` int32 `[length]`."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put <name>.txt in <data_dir>/downloads/manual/ (or in $GL_JAX_TEXT_DIR) and use text/<name>."
    )
    test_fraction = 0.1

    def __init__(self, *, config: str | tfds.core.BuilderConfig | None = None, **kwargs):
        if config is None:
            raise ValueError("Name a text file: 'text/<name>' reads <name>.txt (see gl_jax/data/text.py).")
        if isinstance(config, str):
            config = tfds.core.BuilderConfig(name=config)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        _, length = parse_name(self.builder_config.name)
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Blocks of {length} UTF-8 bytes of a text file.",
            features=tfds.features.FeaturesDict({"x": tfds.features.Tensor(shape=(length,), dtype=np.int32)}),
        )

    def _source(self, dl_manager) -> pathlib.Path:
        del dl_manager  # Its `manual_dir` asserts that the folder exists; a missing file gets our message.
        stem, _ = parse_name(self.builder_config.name)
        manual = pathlib.Path(self._data_dir_root) / "downloads" / "manual"
        folder = os.environ.get("GL_JAX_TEXT_DIR") or manual
        path = pathlib.Path(folder) / f"{stem}.txt"
        if not path.is_file():
            raise FileNotFoundError(
                f"Text file {path} not found for dataset text/{self.builder_config.name}. Put {stem}.txt in "
                f"{manual} or set $GL_JAX_TEXT_DIR to a folder holding it."
            )
        return path

    def _split_generators(self, dl_manager):
        data = np.frombuffer(self._source(dl_manager).read_bytes(), np.uint8)
        _, length = parse_name(self.builder_config.name)
        cut = int(len(data) * (1.0 - self.test_fraction))
        splits = {"train": data[:cut], "test": data[cut:]}
        for split, part in splits.items():
            if len(part) < length:
                raise ValueError(
                    f"The {split} part of the text file has {len(part)} bytes, fewer than one block of "
                    f"{length}; use a longer file or a shorter block (text/<name>-<length>)."
                )
        return {split: self._generate_examples(part, length) for split, part in splits.items()}

    def _generate_examples(self, data: np.ndarray, length: int):
        blocks = data[: len(data) // length * length].reshape(-1, length).astype(np.int32)
        for i, block in enumerate(blocks):
            yield i, {"x": block}
