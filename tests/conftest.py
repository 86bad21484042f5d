"""Shared test set-up: one TFDS data_dir per session, prepared lazily by the tests that need it."""

import os
import pathlib

import pytest

from gl_jax import xla_flags

# The XLA options the gl-jax command starts with (XLA:CPU's own convolutions: the image tests run 2-3x
# faster), before any test starts JAX's backend; in-process results then match the command's.
xla_flags.apply_defaults()

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """A session-wide TFDS data_dir; also exported as $TFDS_DATA_DIR for subprocesses."""
    path = str(tmp_path_factory.mktemp("tfds"))
    os.environ["TFDS_DATA_DIR"] = path
    return path


def load_config(name: str, variant: str = ""):
    """`get_config(variant)` of `experiments/<name>.py` (the package's `gl_jax.experiments`)."""
    from gl_jax import experiments

    return experiments.get_config(f"{name}:{variant}")
