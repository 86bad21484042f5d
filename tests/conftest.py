"""Shared test set-up: one TFDS data_dir per session, prepared lazily by the tests that need it."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """A session-wide TFDS data_dir; also exported as $TFDS_DATA_DIR for subprocesses."""
    path = str(tmp_path_factory.mktemp("tfds"))
    os.environ["TFDS_DATA_DIR"] = path
    return path


def load_config(name: str, variant: str = ""):
    """Loads `experiments/<name>.py` and calls its `get_config(variant)`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"experiments.{name}", REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)
