"""The experiment configs, shipped with the package as `gl_jax.experiments` (this folder is installed
under that name, `setup.cfg`), so an installed gl_jax runs them without a clone:

  gl-jax --config toy_vp:smoke --workdir runs/toy          # a name, as well as a file path
  config = gl_jax.experiments.get_config("digits_vp:smoke")  # in your own code or a notebook

Each file defines `get_config(variant="")` and says in its docstring what it trains and how long it takes.
"""

from __future__ import annotations

import importlib
import os

import ml_collections

__all__ = ["names", "config_path", "get_config"]

_FOLDER = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    """The names of the experiment configs, sorted (`toy_vp`, `digits_vp`, ...)."""
    return sorted(
        name[:-3] for name in os.listdir(_FOLDER) if name.endswith(".py") and not name.startswith("_")
    )


def _check_name(name: str) -> None:
    if name not in names():
        from gl_jax.registry import did_you_mean

        raise ValueError(
            f"No experiment config named {name!r}.{did_you_mean(name, names())} Pass one of "
            "gl_jax.experiments.names() (`gl-jax --help` lists them) or a config file's path."
        )


def config_path(name: str) -> str:
    """The file of the experiment config `name` (without a variant), e.g. `.../experiments/toy_vp.py`.

    Raises:
      ValueError: no config has that name (the nearest names are suggested).
    """
    _check_name(name)
    return os.path.join(_FOLDER, f"{name}.py")


def get_config(name: str) -> ml_collections.ConfigDict:
    """The config of `name[:variant]`, e.g. `get_config("toy_vp:smoke")`: its file's `get_config(variant)`.

    Args:
      name: an experiment config's name and optionally a variant after a colon.

    Returns:
      A new `ml_collections.ConfigDict` (change it freely).

    Raises:
      ValueError: no config has that name, or the config has no such variant.
    """
    base, _, variant = name.partition(":")
    _check_name(base)
    module = importlib.import_module(f"{__name__}.{base}")
    return module.get_config(variant)
