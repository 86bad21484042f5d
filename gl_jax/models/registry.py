"""Building a network from its config: the one place a model name is looked up."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from gl_jax.models.classifier import NoisyClassifier
from gl_jax.models.dit import DiT
from gl_jax.models.mlp import ScoreMLP
from gl_jax.models.preconditioning import EDMUNet
from gl_jax.models.small_unet import SmallUNet
from gl_jax.models.unet import UNet

__all__ = ["MODELS", "build_model"]

MODELS: dict[str, type[nn.Module]] = {
    "mlp": ScoreMLP,
    "small_unet": SmallUNet,
    "unet": UNet,
    "edm": EDMUNet,
    "dit": DiT,
    "noisy_classifier": NoisyClassifier,
}


def build_model(name: str, options: Mapping[str, Any]) -> nn.Module:
    """Instantiates `MODELS[name](**options)`, naming any unknown option and its nearest valid one.

    For models with a table of named sizes (`UNet`, `EDMUNet`, `DiT`, `NoisyClassifier`), the option
    `variant` picks an entry (e.g. `{"variant": "ddpmpp-cifar10", "dropout": 0.2}`); the other options
    override it.
    """
    if name not in MODELS:
        near = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.{hint}")
    cls = MODELS[name]
    variants = getattr(cls, "VARIANTS", None)
    valid = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")]
    allowed = valid + ["variant"] if variants is not None else valid
    for key in options:
        if key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean 'config.model.{near[0]}'?" if near else ""
            raise ValueError(
                f"Unknown config key 'config.model.{key}' for model {name!r}{hint} "
                f"Valid keys: {sorted(allowed)}."
            )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    variant = kwargs.pop("variant", None)
    if variant is None:
        return cls(**kwargs)
    if variant not in variants:
        near = difflib.get_close_matches(variant, variants, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(
            f"Unknown variant {variant!r} of model {name!r}; choose one of {sorted(variants)}.{hint}"
        )
    return cls.from_variant(variant, **kwargs)
