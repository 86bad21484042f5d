"""The tables of networks by config name, the one place a model name is looked up: `MODELS` for the
diffusion families' denoisers, and the GAN, VAE and autoregressive families' networks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from gl_jax.models.conv_vae import ConvVAE
from gl_jax.models.dcgan import DCGAN
from gl_jax.models.dit import DiT
from gl_jax.models.edm2_unet import EDM2UNet
from gl_jax.models.mlp import ScoreMLP
from gl_jax.models.preconditioning import EDMUNet
from gl_jax.models.small_unet import SmallUNet
from gl_jax.models.transformer import Transformer
from gl_jax.models.unet import UNet
from gl_jax.registry import Registry

__all__ = ["MODELS", "GAN_MODELS", "VAE_MODELS", "AR_MODELS", "build_model"]

MODELS: Registry[type[nn.Module]] = Registry(
    "model",
    {
        "mlp": ScoreMLP,
        "small_unet": SmallUNet,
        "unet": UNet,
        "edm": EDMUNet,
        "edm2": EDM2UNet,
        "dit": DiT,
    },
)
# The networks of the other families, by `config.model.name` (built in `gl_jax.families.build`, which sets
# their data-dependent fields).
GAN_MODELS: Registry[type[nn.Module]] = Registry("GAN model", {"dcgan": DCGAN})
VAE_MODELS: Registry[type[nn.Module]] = Registry("VAE model", {"conv_vae": ConvVAE})
AR_MODELS: Registry[type[nn.Module]] = Registry("autoregressive model", {"transformer": Transformer})


def build_model(
    name: str, options: Mapping[str, Any], *, where: str = "config.model", **fixed: Any
) -> nn.Module:
    """Instantiates `MODELS[name](**options, **fixed)`, naming any unknown option and its nearest valid one.

    For models with a table of named sizes (`UNet`, `EDMUNet`, `EDM2UNet`, `DiT`, `NoisyClassifier`), the
    option `variant` picks an entry (e.g. `{"variant": "ddpmpp-cifar10", "dropout": 0.2}`); the other
    options override it.

    Args:
      name: a key of `MODELS`.
      options: the model's config options.
      where: the options' config path, for messages.
      **fixed: fields the caller sets from the data (e.g. an image shape), not from the config.
    """
    return MODELS.build(name, options, where=where, **fixed)
