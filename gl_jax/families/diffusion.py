"""Score-based diffusion (Song et al. 2021; Ho et al. 2020; Karras et al. 2022) as a model family.

One family covers every published setup by its parts: the forward process (`SDES`), what the network
predicts (eps, x0, v or score), what it is given as noise conditioning (`NOISE_CONDITIONS`), the loss
weighting and time sampling of `denoising_score_matching`, class labels with classifier-free guidance,
and the sampler.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gl_jax import likelihood
from gl_jax.families.base import Family, Sampler
from gl_jax.losses.coupling import Coupling, IndependentCoupling
from gl_jax.losses.score import (
    Sigma2Weighting,
    TimeSampling,
    UniformTimes,
    Weighting,
    denoising_score_matching,
    uncertainty_weighted_score_matching,
)
from gl_jax.models.edm2_unet import forced_weight_normalization
from gl_jax.parametrization import PREDICTIONS, convert
from gl_jax.registry import Registry
from gl_jax.samplers import SampleResult, euler_maruyama
from gl_jax.samplers.guidance import GuidedScore, autoguided_score, evaluation_times, interval_guided_score
from gl_jax.samplers.thresholding import THRESHOLDS, thresholded_score
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = ["ScoreDiffusion", "NOISE_CONDITIONS", "DEFAULT_SAMPLER"]

# Euler-Maruyama with 500 steps (one object, so two default families compare equal).
DEFAULT_SAMPLER = functools.partial(euler_maruyama, steps=500)


def _sigma_over_alpha(sde: GaussianDiffusion, t: jax.Array) -> jax.Array:
    return sde.sigma(t) / sde.alpha(t)


# What the network is given as its noise-conditioning input, `[B]` from the time `[B]`:
# "t": the time itself; "999t": 999 t, the DDPM/DDPM++ convention (score_sde feeds t * 999 to the
# positional embedding of its VP models); "log_sigma": log sigma(t), for NCSN++'s Fourier embedding on
# the VE SDE (Song et al. 2021, appendix H); "sigma": the noise level sigma(t) / alpha(t), for networks
# wrapped in EDM's preconditioning, which compute c_noise = ln(sigma) / 4 themselves (Karras et al. 2022).
NOISE_CONDITIONS = Registry(
    "noise_cond",
    {
        "t": lambda sde, t: t,
        "999t": lambda sde, t: 999.0 * t,
        "log_sigma": lambda sde, t: jnp.log(sde.sigma(t)),
        "sigma": _sigma_over_alpha,
    },
)


def _model_attr(model: nn.Module, name: str, default: Any) -> Any:
    """An attribute of the network, or of the network a wrapper (e.g. `EDMPrecond`) holds as `net`."""
    if hasattr(model, name):
        return getattr(model, name)
    return getattr(getattr(model, "net", None), name, default)


@dataclasses.dataclass(frozen=True)
class ScoreDiffusion(Family):
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
      guidance_interval: `(sigma_lo, sigma_hi)`: guide only where sigma_lo < sigma(t) / alpha(t) <= sigma_hi
        and use the conditional score alone elsewhere (Kynkaanniemi et al. 2024); None guides everywhere.
      weighting, time_sampling, reduce: options of `denoising_score_matching` (the weighting and time
        sampling as objects of `gl_jax.losses.score`, e.g. `EDMWeighting()`, `LogNormalTimes()`).
      uncertainty: EDM2's learned uncertainty weighting (Karras et al. 2024, sec. 5), a network of the
        log-SNR such as `gl_jax.losses.weightings.UncertaintyWeight()`, trained with the loss
        (`uncertainty_weighted_score_matching`); the parameters are then `{"denoiser", "uncertainty"}`.
        None: the weighting alone.
      guide_model, guide_params, autoguidance: autoguidance (Karras et al. 2024, "Guiding a diffusion
        model with a bad version of itself"): a weaker network of the same task (its parameters as arrays,
        e.g. an earlier checkpoint or a smaller config) guides the model with weight `autoguidance` in
        `guidance_interval`; None: no guide. The guide's parameters are not compared or hashed.
      coupling: how the loss pairs noise with data, `IndependentCoupling()` or `OTCoupling()` (minibatch
        OT over each loss call's batch: the global batch under `jit`, a device's under `pmap`, a
        micro-batch with gradient accumulation).
      sampler: the sampler with its steps and options bound, `sampler(key, score_fn, sde, shape)`, e.g.
        `functools.partial(gl_jax.samplers.ddim, steps=50)`.
      threshold: thresholding of the denoised estimate while sampling, "none", "static" or "dynamic"
        (`gl_jax.samplers.thresholding`; for data scaled to [-1, 1]).
      pixel_levels: the integer levels of image data (test bits/dim dequantize them), None for
        continuous data.
    """

    takes_samplers: ClassVar[bool] = True
    reports_bits_per_dim: ClassVar[bool] = True

    model: nn.Module
    sde: GaussianDiffusion
    data_shape: tuple[int, ...]
    prediction: str = "eps"
    noise_cond: str = "t"
    guidance: float = 1.0
    guidance_interval: tuple[float, float] | None = None
    weighting: Weighting = Sigma2Weighting()
    time_sampling: TimeSampling = UniformTimes()
    reduce: str = "mean"
    uncertainty: nn.Module | None = None
    coupling: Coupling = IndependentCoupling()
    sampler: Sampler = dataclasses.field(default_factory=lambda: DEFAULT_SAMPLER)
    threshold: str = "none"
    pixel_levels: int | None = None
    guide_model: nn.Module | None = None
    guide_params: Any = dataclasses.field(default=None, compare=False, repr=False)
    autoguidance: float = 1.0

    def __post_init__(self):
        # Unknown names fail here, once, naming the choices.
        for registry, name in (
            (PREDICTIONS, self.prediction),
            (NOISE_CONDITIONS, self.noise_cond),
            (THRESHOLDS, self.threshold),
        ):
            registry.lookup(name)
        if self.guide_model is not None and self.guidance != 1.0:
            raise ValueError(
                f"Classifier-free guidance (weight {self.guidance}) and autoguidance both guide the model; "
                "use one: set the guidance weight to 1 or drop the guide."
            )

    def _denoiser_params(self, params: Any) -> Any:
        # With a learned uncertainty weighting the tree is {"denoiser", "uncertainty"}.
        return params["denoiser"] if self.uncertainty is not None else params

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
        params = self._denoiser_params(params)
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
        if self.uncertainty is None:
            return self.model.init(key, x, jnp.ones((1,), jnp.float32), **extra)["params"]
        key, key_u = jax.random.split(key)
        return {
            "denoiser": self.model.init(key, x, jnp.ones((1,), jnp.float32), **extra)["params"],
            "uncertainty": self.uncertainty.init(key_u, jnp.zeros((1,), jnp.float32))["params"],
        }

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

        options = dict(
            weighting=self.weighting,
            prediction=self.prediction,
            time_sampling=self.time_sampling,
            reduce=self.reduce,
            coupling=self.coupling,
        )
        if self.uncertainty is not None:
            log_var_fn = functools.partial(self.uncertainty.apply, {"params": params["uncertainty"]})
            return uncertainty_weighted_score_matching(keys, model_fn, log_var_fn, self.sde, x, **options)
        return denoising_score_matching(keys, model_fn, self.sde, x, **options)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        """`num` samples; a class-conditional model gets labels 0, 1, ..., cycling, one class per row."""
        return self.sample_counted(params, key, num).x

    def sample_counted(self, params: Any, key: jax.Array, num: int) -> SampleResult:
        """`num` samples and the number of network evaluations per sample (see `sample_conditional`)."""
        if self.num_classes:
            return self.sample_conditional(params, key, jnp.arange(num) % self.num_classes)
        return self._sample(key, self._sampling_score(params, None), (num, *self.data_shape))

    def sample_one(self, params: Any, key: jax.Array, index: jax.Array) -> SampleResult:
        if self.num_classes:  # Class index % num_classes, as `sample_counted`'s rows.
            return self.sample_conditional(
                params, key, jnp.reshape(index % self.num_classes, (1,)).astype(jnp.int32)
            )
        return super().sample_one(params, key, index)

    def sample_conditional(self, params: Any, key: jax.Array, labels: jax.Array) -> SampleResult:
        """Samples of the classes `labels` `[num]` with guidance weight `guidance`, and their NFE.

        The NFE counts network evaluations: a guided call costs two (the model and its guide), one outside
        `guidance_interval`, where only the model runs. With an interval, the calls' times come from
        `gl_jax.samplers.guidance.evaluation_times`, measured once when the sampler is traced (exact for
        fixed-step samplers; an adaptive ODE solver's steps depend on the score, so its count is that of
        the stand-in score's run).

        Raises:
          ValueError: the model is unconditional (no `num_classes`).
        """
        if not self.num_classes:
            return super().sample_conditional(params, key, labels)
        return self._sample(key, self._sampling_score(params, labels), (labels.shape[0], *self.data_shape))

    def _guide(self) -> ScoreDiffusion:
        """The autoguidance guide as a family of its own (same process, parametrisation and labels)."""
        return dataclasses.replace(self, model=self.guide_model, guide_model=None, guide_params=None)

    def _sampling_score(self, params: Any, labels: jax.Array | None) -> Callable | GuidedScore:
        """The score the sampler runs: the model's, or a `GuidedScore` (classifier-free or autoguidance)."""
        if self.guide_model is not None:
            guide_params = jax.tree.map(jnp.asarray, self.guide_params)
            return autoguided_score(
                self.score_fn(params, labels),
                self._guide().score_fn(guide_params, labels),
                self.sde,
                w=self.autoguidance,
                interval=self.guidance_interval,
            )
        if labels is None or self.guidance == 1.0:
            return self.score_fn(params, labels)
        # Guided in (sigma_lo, sigma_hi] of sigma / alpha (Kynkaanniemi et al. 2024), or everywhere.
        return interval_guided_score(
            lambda x, t, c: self.score_fn(params, c)(x, t),
            labels,
            self.sde,
            w=self.guidance,
            interval=self.guidance_interval,
            null_cond=jnp.full_like(labels, self.num_classes),  # The dropped label (unconditional).
        )

    def _sample(self, key: jax.Array, score: Callable, shape: tuple[int, ...]) -> SampleResult:
        result = self.sampler(key, thresholded_score(score, self.sde, method=self.threshold), self.sde, shape)
        if not isinstance(score, GuidedScore):
            return result
        if score.interval is None:  # Both networks at every call (one when w is 1).
            return SampleResult(result.x, score.evaluations(jnp.zeros((1,))) * result.nfe)
        # A host measurement at trace time (the times of a fixed-step sampler do not depend on the score).
        with jax.ensure_compile_time_eval():
            nfe = int(score.evaluations(jnp.asarray(evaluation_times(self.sampler, self.sde, shape))))
        return SampleResult(result.x, nfe)

    def optimizer(self, base: Callable[..., optax.GradientTransformation]) -> optax.GradientTransformation:
        """The config's optimizer; for a network with forced weight normalisation (EDM2's
        magnitude-preserving U-Net, Karras et al. 2024, eq. 66) followed by the projection of its weight
        rows back to unit magnitude, so every update leaves them there."""
        if _model_attr(self.model, "forced_weight_norm", False):
            return optax.chain(base(), forced_weight_normalization())
        return base()

    def with_sampler(self, sampler: Sampler, *, threshold: str) -> ScoreDiffusion:
        """The same model sampling with `sampler` and `threshold` (e.g. an eval setting)."""
        return dataclasses.replace(self, sampler=sampler, threshold=threshold)

    def bits_per_dim(
        self, params: Any, key: jax.Array, x: jax.Array, labels: jax.Array | None, **options: Any
    ) -> tuple[jax.Array, jax.Array]:
        """Bits/dim `[B]` of test data by the probability-flow ODE (Song et al. 2021, sec. 4.3), and its NFE.

        Image data (integer levels) is uniformly dequantized first, x = 2 (k + u) / L - 1 (Theis et al.
        2016), and the discrete likelihood's offset log2(L / 2) added; continuous data gets -log2 p / D.

        Args:
          params: network parameters.
          key: PRNG key (dequantization noise, trace probes).
          x: `[B, *data_shape]` integer levels (images) or floats.
          labels: `[B]` labels of a class-conditional model (log p(x | label)), else None.
          **options: `gl_jax.likelihood.ode_log_likelihood`'s options (trace, rtol, atol).
        """
        key_u, key_probe = jax.random.split(key)
        if self.pixel_levels:
            x = likelihood.uniform_dequantize(key_u, x, levels=self.pixel_levels)
        score = self.score_fn(params, labels if self.num_classes else None)
        result = likelihood.ode_log_likelihood(key_probe, score, self.sde, x.astype(jnp.float32), **options)
        num_dims = math.prod(self.data_shape)
        if self.pixel_levels:
            bpd = likelihood.bits_per_dim(result.logp, num_dims=num_dims, levels=self.pixel_levels)
        else:
            bpd = likelihood.bits_per_dim(result.logp, num_dims=num_dims, offset=0.0)
        return bpd, result.nfe
