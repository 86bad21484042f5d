"""Score-based diffusion (Song et al. 2021): a noise-predicting network trained by score matching."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gl_jax.data.sources import DataSpec
from gl_jax.losses.score import denoising_score_matching
from gl_jax.models.registry import build_model
from gl_jax.samplers import SAMPLERS
from gl_jax.sde import VPSDE, GaussianDiffusion, broadcast_to_data

__all__ = ["ScoreDiffusion", "SDES", "build_sde"]

SDES = {"vp": VPSDE}


def build_sde(name: str, options: dict) -> GaussianDiffusion:
    """`SDES[name](**options)` with clear errors for unknown names and options."""
    if name not in SDES:
        near = difflib.get_close_matches(name, SDES, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"Unknown SDE {name!r}; choose one of {sorted(SDES)}.{hint}")
    try:
        return SDES[name](**options)
    except TypeError as e:
        raise ValueError(f"Bad config.sde options for {name!r}: {e}") from None


@dataclasses.dataclass(frozen=True)
class ScoreDiffusion:
    """A diffusion model whose network predicts the noise eps; the score is -eps_hat / sigma(t).

    Attributes:
      model: `model.apply({"params": p}, x, t) -> eps_hat` shaped like x.
      sde: the forward process.
      data_shape: shape of one example.
      weighting, time_sampling, reduce: options of `denoising_score_matching`.
      sampler: a name in `gl_jax.samplers.SAMPLERS`.
      sample_steps: number of sampler steps.
    """

    model: nn.Module
    sde: GaussianDiffusion
    data_shape: tuple[int, ...]
    weighting: str = "sigma2"
    time_sampling: str = "uniform"
    reduce: str = "mean"
    sampler: str = "euler_maruyama"
    sample_steps: int = 500

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, spec: DataSpec) -> ScoreDiffusion:
        model_options = dict(config.model)
        model = build_model(model_options.pop("name"), model_options)
        if config.sample.sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {config.sample.sampler!r}; choose one of {sorted(SAMPLERS)}.")
        return cls(
            model=model,
            sde=build_sde(config.sde.name, {k: v for k, v in config.sde.items() if k != "name"}),
            data_shape=tuple(spec.shape),
            weighting=config.loss.weighting,
            time_sampling=config.loss.time_sampling,
            reduce=config.loss.reduce,
            sampler=config.sample.sampler,
            sample_steps=config.sample.steps,
        )

    def score_fn(self, params: Any):
        """The score `s(x, t)` of the model with `params`."""

        def score(x: jax.Array, t: jax.Array) -> jax.Array:
            eps = self.model.apply({"params": params}, x, t)
            return -eps / broadcast_to_data(self.sde.sigma(t), x)

        return score

    def init(self, key: jax.Array) -> Any:
        x = jnp.zeros((1, *self.data_shape), jnp.float32)
        return self.model.init(key, x, jnp.ones((1,), jnp.float32))["params"]

    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        x = batch["x"]
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"Batch examples have shape {tuple(x.shape[1:])}, the model was built for {self.data_shape}."
            )

        def eps_fn(x_t, t):
            return self.model.apply({"params": params}, x_t, t)

        return denoising_score_matching(
            keys,
            eps_fn,
            self.sde,
            x,
            weighting=self.weighting,
            prediction="eps",
            time_sampling=self.time_sampling,
            reduce=self.reduce,
        )

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        sampler = SAMPLERS[self.sampler]
        result = sampler(
            key, self.score_fn(params), self.sde, (num, *self.data_shape), steps=self.sample_steps
        )
        return result.x
