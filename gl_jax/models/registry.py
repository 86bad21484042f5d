"""Building a network from its config: the one place a model name is looked up."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from gl_jax.models.mlp import ScoreMLP
from gl_jax.models.small_unet import SmallUNet

__all__ = ["MODELS", "build_model"]

MODELS: dict[str, type[nn.Module]] = {
    "mlp": ScoreMLP,
    "small_unet": SmallUNet,
}


def build_model(name: str, options: Mapping[str, Any]) -> nn.Module:
    """Instantiates `MODELS[name](**options)`, naming any unknown option and its nearest valid one."""
    if name not in MODELS:
        near = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.{hint}")
    cls = MODELS[name]
    valid = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")]
    for key in options:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean 'config.model.{near[0]}'?" if near else ""
            raise ValueError(
                f"Unknown config key 'config.model.{key}' for model {name!r}{hint} "
                f"Valid keys: {sorted(valid)}."
            )
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
