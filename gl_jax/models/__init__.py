"""Flax linen networks with typed fields. Build them from a config at the boundary with `build_model`."""

from gl_jax.models.mlp import ScoreMLP
from gl_jax.models.registry import MODELS, build_model
from gl_jax.models.small_unet import SmallUNet

__all__ = ["MODELS", "ScoreMLP", "SmallUNet", "build_model"]
