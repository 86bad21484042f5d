"""Flax linen networks with typed fields. Build them from a config at the boundary with `build_model`."""

from gl_jax.models.classifier import NoisyClassifier
from gl_jax.models.dit import DiT
from gl_jax.models.edm2_unet import EDM2UNet, MPUNet, normalize_weights
from gl_jax.models.mlp import ScoreMLP
from gl_jax.models.preconditioning import EDMPrecond, EDMUNet
from gl_jax.models.registry import MODELS, build_model
from gl_jax.models.schedule import MonotoneGamma
from gl_jax.models.small_unet import SmallUNet
from gl_jax.models.unet import UNet, UNetEncoder

__all__ = [
    "DiT",
    "EDM2UNet",
    "EDMPrecond",
    "EDMUNet",
    "MODELS",
    "MonotoneGamma",
    "MPUNet",
    "NoisyClassifier",
    "ScoreMLP",
    "SmallUNet",
    "UNet",
    "UNetEncoder",
    "build_model",
    "normalize_weights",
]
