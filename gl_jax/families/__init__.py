"""Model families: each binds networks, an objective and a way of sampling behind the `Family` interface
(`init`, `loss`, `sample`, and the defaults `optimizer`, `sample_counted`, `with_sampler`, `bits_per_dim`).

`FAMILIES` is the table of families by `config.family`; `build_family(config, spec)` builds one at the
config edge (`gl_jax.families.build`), so the families themselves take typed options only.
"""

from __future__ import annotations

import ml_collections

from gl_jax.families import build
from gl_jax.families.autoregressive import Autoregressive
from gl_jax.families.base import Family, Sampler
from gl_jax.families.consistency import ConsistencyModel
from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.families.gan import GAN
from gl_jax.families.latent import LatentDiffusion
from gl_jax.families.progressive import ProgressiveDistillation
from gl_jax.families.vae import VAE
from gl_jax.registry import Registry
from gl_jax.spec import DataSpec

__all__ = [
    "FAMILIES",
    "Family",
    "Sampler",
    "build_family",
    "ScoreDiffusion",
    "GAN",
    "VAE",
    "Autoregressive",
    "LatentDiffusion",
    "ConsistencyModel",
    "ProgressiveDistillation",
]

FAMILIES = Registry(
    "family",
    {
        "score": build.build_score,
        "gan": build.build_gan,
        "vae": build.build_vae,
        "autoregressive": build.build_autoregressive,
        "latent": build.build_latent,
        "consistency": build.build_consistency,
        "progressive": build.build_progressive,
    },
)


def build_family(
    config: ml_collections.ConfigDict, spec: DataSpec, *, load_params: build.ParamsLoader | None = None
) -> Family:
    """Builds `config.family` for data described by `spec`.

    Args:
      config: the experiment config.
      spec: the dataset's `DataSpec`.
      load_params: reads another run's parameters (`gl_jax.train.saved_params.load_params`); the latent
        family needs it for its autoencoder.
    """
    return FAMILIES[config.family](config, spec, load_params=load_params)
