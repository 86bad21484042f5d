"""Toy distributions in N dimensions, with exact samplers and, where one exists, the exact log-density.

The distributions are plain objects (`sample_numpy(rng, n)`, and `log_prob(x)` in JAX where exact) so
tests and users can check samplers and likelihoods against them; `Toy` is a TFDS builder that writes
fixed samples of each as array_record so the training pipeline reads toy data exactly as it reads images.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from gl_jax.analytic import GaussianMixture, random_mixture

__all__ = ["Checkerboard", "TwoMoons", "SwissRoll", "DISTRIBUTIONS", "Toy", "ring_mixture"]


def ring_mixture(num_modes: int = 8, radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
    """Equal-weight modes evenly spaced on a circle in 2-D."""
    angles = 2 * np.pi * np.arange(num_modes) / num_modes
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(np.full(num_modes, 1.0 / num_modes), means, np.full(num_modes, std))


@dataclasses.dataclass(frozen=True)
class Checkerboard:
    """Uniform on the 8 dark unit squares of a 4x4 board on [-2, 2]^2 (Grathwohl et al. 2019, FFJORD)."""

    dim: int = 2

    def sample_numpy(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + (np.floor(x1) % 2)
        return np.stack([x1, x2], axis=1).astype(np.float32)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Exact log-density: log(1/8) on the dark squares, -inf elsewhere."""
        inside = jnp.all(jnp.abs(x) <= 2, axis=-1)
        dark = (jnp.floor(x[:, 0]) + jnp.floor(x[:, 1])) % 2 == 0
        return jnp.where(inside & dark, -math.log(8.0), -jnp.inf)


@dataclasses.dataclass(frozen=True)
class TwoMoons:
    """Two interleaved half circles plus Gaussian noise (no closed-form density)."""

    noise: float = 0.1
    dim: int = 2

    def sample_numpy(self, rng: np.random.Generator, n: int) -> np.ndarray:
        upper = rng.random(n) < 0.5
        angle = rng.uniform(0, np.pi, n)
        x = np.where(upper, np.cos(angle), 1 - np.cos(angle))
        y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
        pts = np.stack([x - 0.5, y - 0.25], axis=1) * 2.0
        return (pts + self.noise * rng.standard_normal((n, 2))).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SwissRoll:
    """The 2-D swiss roll t (cos t, sin t), t ~ U[1.5 pi, 4.5 pi], scaled, plus noise (no closed form)."""

    noise: float = 0.05
    dim: int = 2

    def sample_numpy(self, rng: np.random.Generator, n: int) -> np.ndarray:
        t = rng.uniform(1.5 * np.pi, 4.5 * np.pi, n)
        pts = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 7.0
        return (pts + self.noise * rng.standard_normal((n, 2))).astype(np.float32)


DISTRIBUTIONS = {
    "gmm_2d": ring_mixture(),
    "gmm_16d": random_mixture(16),
    "gmm_64d": random_mixture(64),
    "checkerboard": Checkerboard(),
    "two_moons": TwoMoons(),
    "swiss_roll": SwissRoll(),
}

_SPLIT_SIZES = {"train": 20_000, "test": 5_000}


class Toy(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Fixed samples of each toy distribution: `toy/<name>` with feature `x` float32 `[D]`.

    The split seeds are fixed, so every machine prepares the same data.
    """

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in DISTRIBUTIONS]

    def _info(self) -> tfds.core.DatasetInfo:
        dim = DISTRIBUTIONS[self.builder_config.name].dim
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Samples of the toy distribution {self.builder_config.name}.",
            features=tfds.features.FeaturesDict({"x": tfds.features.Tensor(shape=(dim,), dtype=np.float32)}),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the data is generated.
        return {split: self._generate_examples(split) for split in _SPLIT_SIZES}

    def _generate_examples(self, split: str):
        dist = DISTRIBUTIONS[self.builder_config.name]
        rng = np.random.default_rng(0 if split == "train" else 1)
        for i, x in enumerate(dist.sample_numpy(rng, _SPLIT_SIZES[split])):
            yield i, {"x": x}
