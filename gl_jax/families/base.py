"""The family interface and building a family from a config (the one place a family name is looked up)."""

from __future__ import annotations

from typing import Any, Protocol

import jax
import ml_collections

from gl_jax.data.sources import DataSpec

__all__ = ["Family", "build_family"]


class Family(Protocol):
    """What the trainer needs from a model family."""

    def init(self, key: jax.Array) -> Any:
        """Initial parameters."""

    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        """Batch-mean loss and metrics; `keys` are `[B]` per-example PRNG keys."""

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        """`num` samples shaped like the data, in the data's range."""


def build_family(config: ml_collections.ConfigDict, spec: DataSpec) -> Family:
    """Builds `config.family` for data described by `spec`."""
    from gl_jax.families.diffusion import ScoreDiffusion

    families = {"score": ScoreDiffusion.from_config}
    if config.family not in families:
        raise ValueError(f"Unknown family {config.family!r}; choose one of {sorted(families)}.")
    return families[config.family](config, spec)
