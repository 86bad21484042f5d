"""Score-based diffusion (Song et al. 2021; Ho et al. 2020; Karras et al. 2022) as a model family.

One family covers every published setup by its parts: the forward process (`SDES`), what the network
predicts (eps, x0, v or score), what it is given as noise conditioning (`NOISE_CONDITIONS`), the loss
weighting and time sampling of `denoising_score_matching`, class labels with classifier-free guidance,
and the sampler.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gl_jax.data.sources import DataSpec
from gl_jax.losses.score import TIME_SAMPLINGS, WEIGHTINGS, denoising_score_matching
from gl_jax.models.registry import build_model
from gl_jax.parametrization import PREDICTIONS, convert
from gl_jax.samplers import SAMPLERS, SampleResult
from gl_jax.samplers.conditional import guided_score
from gl_jax.samplers.thresholding import THRESHOLDS, thresholded_score
from gl_jax.sde import (
    EDMSDE,
    VESDE,
    VPSDE,
    DiscreteDDPM,
    GaussianDiffusion,
    RectifiedFlow,
    SubVPSDE,
    broadcast_to_data,
)

__all__ = ["ScoreDiffusion", "SDES", "NOISE_CONDITIONS", "build_sde"]

SDES = {
    "vp": VPSDE,
    "subvp": SubVPSDE,
    "ve": VESDE,
    "edm": EDMSDE,
    "rectified_flow": RectifiedFlow,
    "ddpm": DiscreteDDPM,
}


def _sigma_over_alpha(sde: GaussianDiffusion, t: jax.Array) -> jax.Array:
    return sde.sigma(t) / sde.alpha(t)


# What the network is given as its noise-conditioning input, `[B]` from the time `[B]`:
# "t": the time itself; "999t": 999 t, the DDPM/DDPM++ convention (score_sde feeds t * 999 to the
# positional embedding of its VP models); "log_sigma": log sigma(t), for NCSN++'s Fourier embedding on
# the VE SDE (Song et al. 2021, appendix H); "sigma": the noise level sigma(t) / alpha(t), for networks
# wrapped in EDM's preconditioning, which compute c_noise = ln(sigma) / 4 themselves (Karras et al. 2022).
NOISE_CONDITIONS = {
    "t": lambda sde, t: t,
    "999t": lambda sde, t: 999.0 * t,
    "log_sigma": lambda sde, t: jnp.log(sde.sigma(t)),
    "sigma": _sigma_over_alpha,
}


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


def _model_attr(model: nn.Module, name: str, default: Any) -> Any:
    """An attribute of the network, or of the network a wrapper (e.g. `EDMPrecond`) holds as `net`."""
    if hasattr(model, name):
        return getattr(model, name)
    return getattr(getattr(model, "net", None), name, default)


@dataclasses.dataclass(frozen=True)
class ScoreDiffusion:
    """A diffusion model: a network's prediction (eps, x0, v or score) defines the score of every x_t.

    Attributes:
      model: `model.apply({"params": p}, x, cond)` -> prediction shaped like x; class-conditional models
        (a `num_classes > 0` attribute) also take `y` `[B]` labels, and models with dropout or label
        dropout take `train=True` with a `"dropout"` rng in training.
      sde: the forward process.
      data_shape: shape of one example.
      prediction: what the network predicts: "eps", "x0" (e.g. an EDM-preconditioned denoiser), "v" or
        "score"; converted to a score for the samplers and to eps for the loss.
      noise_cond: the network's conditioning input, a key of `NOISE_CONDITIONS`.
      guidance: classifier-free guidance weight w for sampling class-conditional models (1: the plain
        conditional score; 0: unconditional; > 1: guided, Ho & Salimans 2022).
      weighting, time_sampling, reduce: options of `denoising_score_matching`.
      sampler: a name in `gl_jax.samplers.SAMPLERS`.
      sample_steps: number of sampler steps.
      sample_options: the sampler's keyword options as `(name, value)` pairs (hashable, so the family
        can be a static argument of `jax.jit`).
      threshold: thresholding of the denoised estimate while sampling, "none", "static" or "dynamic"
        (`gl_jax.samplers.thresholding`; for data scaled to [-1, 1]).
    """

    model: nn.Module
    sde: GaussianDiffusion
    data_shape: tuple[int, ...]
    prediction: str = "eps"
    noise_cond: str = "t"
    guidance: float = 1.0
    weighting: str = "sigma2"
    time_sampling: str = "uniform"
    reduce: str = "mean"
    sampler: str = "euler_maruyama"
    sample_steps: int = 500
    sample_options: tuple[tuple[str, Any], ...] = ()
    threshold: str = "none"

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"Unknown prediction {self.prediction!r}; choose one of {PREDICTIONS}.")
        if self.noise_cond not in NOISE_CONDITIONS:
            raise ValueError(
                f"Unknown noise_cond {self.noise_cond!r}; choose one of {sorted(NOISE_CONDITIONS)}."
            )
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"Unknown threshold {self.threshold!r}; choose one of {THRESHOLDS}.")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, spec: DataSpec) -> ScoreDiffusion:
        model_options = dict(config.model)
        model = build_model(model_options.pop("name"), model_options)
        if config.sample.sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {config.sample.sampler!r}; choose one of {sorted(SAMPLERS)}.")
        options = dict(config.sample.options)
        accepted = [
            p.name
            for p in inspect.signature(SAMPLERS[config.sample.sampler]).parameters.values()
            if p.kind == p.KEYWORD_ONLY and p.name not in ("steps", "x_init")
        ]
        for name in options:
            if name not in accepted:
                near = difflib.get_close_matches(name, accepted, n=1)
                hint = f" Did you mean {near[0]!r}?" if near else ""
                raise ValueError(
                    f"Unknown config key 'config.sample.options.{name}' for sampler "
                    f"{config.sample.sampler!r}.{hint} Valid keys: {sorted(accepted)}."
                )
        if config.sample.threshold != "none" and spec.kind != "image":
            raise ValueError(
                f"config.sample.threshold={config.sample.threshold!r} keeps samples in the image range "
                f"[-1, 1]; dataset {spec.name!r} is not images, so set config.sample.threshold='none'."
            )
        num_classes = _model_attr(model, "num_classes", 0)
        if num_classes and spec.num_classes is None:
            raise ValueError(
                f"config.model asks for {num_classes} classes but dataset {spec.name!r} has no labels; "
                "set config.model.num_classes=0."
            )
        return cls(
            model=model,
            sde=build_sde(config.sde.name, {k: v for k, v in config.sde.items() if k != "name"}),
            data_shape=tuple(spec.shape),
            prediction=config.loss.prediction,
            noise_cond=config.loss.noise_cond,
            guidance=config.sample.guidance,
            weighting=config.loss.weighting,
            time_sampling=config.loss.time_sampling,
            reduce=config.loss.reduce,
            sampler=config.sample.sampler,
            sample_steps=config.sample.steps,
            sample_options=tuple(
                sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items())
            ),
            threshold=config.sample.threshold,
        )

    @property
    def num_classes(self) -> int:
        return _model_attr(self.model, "num_classes", 0)

    @property
    def _stochastic(self) -> bool:
        """Whether the network draws randomness in training (dropout, label dropout)."""
        return bool(_model_attr(self.model, "dropout", 0.0) or _model_attr(self.model, "label_dropout", 0.0))

    def predict(self, params: Any, x: jax.Array, t: jax.Array, y: jax.Array | None = None, *, keys=None):
        """The network's prediction at (x `[B, ...]`, t `[B]`), optionally labels y `[B]`.

        With `keys` (`[B]` per-example keys) it runs in training mode, each example's dropout drawn from its
        own key (a `vmap` over examples), so the step gives the same numbers however the batch is split.
        """
        cond = NOISE_CONDITIONS[self.noise_cond](self.sde, t)  # [B]
        if keys is None or not self._stochastic:
            extra = {} if y is None else {"y": y}
            return self.model.apply({"params": params}, x, cond, **extra)

        def one(x_i, c_i, y_i, k_i):
            extra = {} if y_i is None else {"y": y_i[None]}
            out = self.model.apply(
                {"params": params}, x_i[None], c_i[None], train=True, rngs={"dropout": k_i}, **extra
            )
            return out[0]

        return jax.vmap(one)(x, cond, y, keys)

    def score_fn(self, params: Any, y: jax.Array | None = None):
        """The score `s(x, t)` of the model with `params` (conditioned on labels `y` when given)."""

        def score(x: jax.Array, t: jax.Array) -> jax.Array:
            alpha = broadcast_to_data(self.sde.alpha(t), x)
            sigma = broadcast_to_data(self.sde.sigma(t), x)
            pred = self.predict(params, x, t, y)
            return convert(pred, source=self.prediction, target="score", x_t=x, alpha=alpha, sigma=sigma)

        return score

    def init(self, key: jax.Array) -> Any:
        x = jnp.zeros((1, *self.data_shape), jnp.float32)
        extra = {"y": jnp.zeros((1,), jnp.int32)} if self.num_classes else {}
        return self.model.init(key, x, jnp.ones((1,), jnp.float32), **extra)["params"]

    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        x = batch["x"]
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"Batch examples have shape {tuple(x.shape[1:])}, the model was built for {self.data_shape}."
            )
        y = batch["label"] if self.num_classes else None
        # A stream of per-example keys for dropout, independent of the loss's own (t, eps) draws.
        dropout_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)

        def model_fn(x_t, t):
            return self.predict(params, x_t, t, y, keys=dropout_keys)

        return denoising_score_matching(
            keys,
            model_fn,
            self.sde,
            x,
            weighting=WEIGHTINGS[self.weighting](),
            prediction=self.prediction,
            time_sampling=TIME_SAMPLINGS[self.time_sampling](),
            reduce=self.reduce,
        )

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        """`num` samples; a class-conditional model gets labels 0, 1, ..., cycling, one class per row."""
        result = self.sample_with(
            params, key, num, sampler=self.sampler, steps=self.sample_steps, options=self.sample_options
        )
        return result.x

    def sample_with(
        self,
        params: Any,
        key: jax.Array,
        num: int,
        *,
        sampler: str,
        steps: int,
        options: tuple[tuple[str, Any], ...] = (),
        threshold: str | None = None,
    ) -> SampleResult:
        """`num` samples from a given sampler, with the number of score evaluations it used.

        The same model and labels as `sample` (which uses the config's sampler), for comparing samplers on
        one checkpoint (`--mode eval`).

        Args:
          params: network parameters.
          key: PRNG key.
          num: number of samples (static under `jax.jit`).
          sampler: a name in `gl_jax.samplers.SAMPLERS`.
          steps: the sampler's `steps`.
          options: the sampler's other keyword options as `(name, value)` pairs (hashable, so they can be
            bound before `jax.jit`).
          threshold: thresholding of the denoised estimate ("none", "static", "dynamic"); None: the
            family's `threshold`.

        Returns:
          `SampleResult(x [num, *data_shape], nfe)`; nfe counts evaluations of the guided score as one.
        """
        if self.num_classes:
            labels = jnp.arange(num) % self.num_classes  # [num]
            if self.guidance == 1.0:
                score = self.score_fn(params, labels)
            else:
                null = jnp.full_like(labels, self.num_classes)  # The dropped label (unconditional).
                score = guided_score(
                    lambda x, t, c: self.score_fn(params, c)(x, t), labels, w=self.guidance, null_cond=null
                )
        else:
            score = self.score_fn(params)
        threshold = self.threshold if threshold is None else threshold
        score = thresholded_score(score, self.sde, method=threshold)
        shape = (num, *self.data_shape)
        return SAMPLERS[sampler](key, score, self.sde, shape, steps=steps, **dict(options))
