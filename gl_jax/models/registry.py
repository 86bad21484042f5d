"""Building a network from its config: the one place a model name is looked up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from gl_jax.models.classifier import NoisyClassifier
from gl_jax.models.dit import DiT
from gl_jax.models.mlp import ScoreMLP
from gl_jax.models.preconditioning import EDMUNet
from gl_jax.models.small_unet import SmallUNet
from gl_jax.models.unet import UNet
from gl_jax.registry import Registry

__all__ = ["MODELS", "build_model"]

MODELS: Registry[type[nn.Module]] = Registry(
    "model",
    {
        "mlp": ScoreMLP,
        "small_unet": SmallUNet,
        "unet": UNet,
        "edm": EDMUNet,
        "dit": DiT,
        "noisy_classifier": NoisyClassifier,
    },
)


def build_model(
    name: str, options: Mapping[str, Any], *, where: str = "config.model", **fixed: Any
) -> nn.Module:
    """Instantiates `MODELS[name](**options, **fixed)`, naming any unknown option and its nearest valid one.

    For models with a table of named sizes (`UNet`, `EDMUNet`, `DiT`, `NoisyClassifier`), the option
    `variant` picks an entry (e.g. `{"variant": "ddpmpp-cifar10", "dropout": 0.2}`); the other options
    override it.

    Args:
      name: a key of `MODELS`.
      options: the model's config options.
      where: the options' config path, for messages.
      **fixed: fields the caller sets from the data (e.g. an image shape), not from the config.
    """
    return MODELS.build(name, options, where=where, **fixed)
