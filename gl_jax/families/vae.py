"""Variational autoencoders (Kingma & Welling 2014) as a model family, with IWAE log-likelihoods.

Training maximises the ELBO with one reparameterised latent sample per example and the closed-form
Gaussian KL; `log_likelihood` reports the tighter IWAE bound with K samples (Burda et al. 2016). The decoder
models the integer pixel values behind the pipeline's images, recovered exactly (`to_levels`), so bits/dim
follow `gl_jax.likelihood.bits_per_dim`'s conventions for discrete data:

  "logistic"   a discretized logistic (mixture) per channel (Salimans et al. 2017) gives P(k) directly:
               bits/dim = -log2 P(k) / D, no offset; comparable with any discrete model of the same data.
  "gaussian"   a density on uniformly dequantized data x = 2 (k + u) / L - 1 (Theis et al. 2016), so
               -log2 P(k) <= -E_u log2 p(x) / D + log2(L / 2) per dimension (`bits_per_dim`'s offset).
  "bernoulli"  binarised data (pixel > half intensity, or sampled with probability k / (L - 1) per step,
               "dynamic" binarisation, Salakhutdinov & Murray 2008): bits/dim of the binary images, a
               different dataset from the L-level one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gl_jax import pixels
from gl_jax.families.base import Family
from gl_jax.losses.vae import (
    bernoulli_log_prob,
    discretized_logistic_log_prob,
    elbo,
    gaussian_kl,
    gaussian_log_prob,
    iwae_bound,
    standard_normal_log_prob,
)

__all__ = ["VAE", "VAEOptions", "DECODERS", "BINARIZATIONS", "params_per_channel"]

DECODERS = ("gaussian", "logistic", "bernoulli")
BINARIZATIONS = ("threshold", "dynamic")


@dataclasses.dataclass(frozen=True)
class VAEOptions:
    """The VAE's decoder and objective (`config.vae`).

    Attributes:
      decoder: one of `DECODERS` (see the module docstring).
      num_mixtures: logistics per channel of the "logistic" decoder (PixelCNN++ uses 10 for RGB).
      kl_weight: weight of the KL term in training (1: the ELBO; beta-VAE otherwise, Higgins et al. 2017).
      iwae_samples: K of the IWAE bound `log_likelihood` reports.
      binarize: "threshold" or "dynamic", for the "bernoulli" decoder.
      min_log_scale: lower bound of the decoder's log-scale (gaussian, logistic): keeps the density finite
        while the decoder is still learning where the bins are.
    """

    decoder: str = "logistic"
    num_mixtures: int = 1
    kl_weight: float = 1.0
    iwae_samples: int = 64
    binarize: str = "threshold"
    min_log_scale: float = -7.0

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise ValueError(f"Unknown decoder {self.decoder!r}; choose one of {DECODERS}.")
        if self.binarize not in BINARIZATIONS:
            raise ValueError(f"Unknown binarization {self.binarize!r}; choose one of {BINARIZATIONS}.")


def params_per_channel(decoder: str, num_mixtures: int) -> int:
    """Decoder outputs per image channel: mean and log-scale; mixture logits, means, log-scales; a logit."""
    return {"gaussian": 2, "logistic": 3 * num_mixtures, "bernoulli": 1}[decoder]


@dataclasses.dataclass(frozen=True)
class VAE(Family):
    """A VAE over images with `levels` integer pixel values.

    Attributes:
      model: a module with `encode(x) -> (mean, log_var)`, `decode(z) -> [B, H, W, C * P]` and
        `latent_shape(image_shape)`, e.g. `ConvVAE` with `out_channels = C * params_per_channel(...)`.
      data_shape: (H, W, C).
      levels: number of pixel values L.
      dequantized: whether the pipeline's images carry uniform dequantization noise.
      options: the decoder and the objective's options.
    """

    reports_bits_per_dim: ClassVar[bool] = True

    model: nn.Module
    data_shape: tuple[int, ...]
    levels: int = 256
    dequantized: bool = False
    options: VAEOptions = VAEOptions()

    @property
    def num_dims(self) -> int:
        return math.prod(self.data_shape)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.model.latent_shape(self.data_shape))

    # --- Encoder and decoder. ---

    def encode(self, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and log-variance of q(z|x), each `[B, *latent_shape]`, for images x in [-1, 1]."""
        return self.model.apply({"params": params}, x, method="encode")

    def _decoder_outputs(self, params: Any, z: jax.Array) -> jax.Array:
        out = self.model.apply({"params": params}, z, method="decode")  # [B, H, W, C * P]
        return out.reshape(*out.shape[:-1], self.data_shape[-1], -1)  # [B, H, W, C, P]

    def _log_scale(self, raw: jax.Array) -> jax.Array:
        # A soft floor: min + softplus(raw - min) stays above min_log_scale and is ~raw above it.
        return self.options.min_log_scale + jax.nn.softplus(raw - self.options.min_log_scale)

    def decode_mean(self, params: Any, z: jax.Array) -> jax.Array:
        """The decoder's mean image `[B, H, W, C]` in [-1, 1] (what sample pictures show)."""
        out = self._decoder_outputs(params, z)
        if self.options.decoder == "gaussian":
            mean = out[..., 0]
        elif self.options.decoder == "logistic":
            m = self.options.num_mixtures
            weights = jax.nn.softmax(out[..., :m], axis=-1)
            mean = jnp.sum(weights * out[..., m : 2 * m], axis=-1)
        else:
            mean = 2.0 * jax.nn.sigmoid(out[..., 0]) - 1.0
        return jnp.clip(mean, -1.0, 1.0)

    def log_likelihood_given(self, params: Any, z: jax.Array, target: jax.Array) -> jax.Array:
        """log p(target | z) per example, in nats, `[B]`; `target` as `targets` returns it."""
        out = self._decoder_outputs(params, z)  # [B, H, W, C, P]
        if self.options.decoder == "gaussian":
            return gaussian_log_prob(target, out[..., 0], self._log_scale(out[..., 1]))
        if self.options.decoder == "logistic":
            m = self.options.num_mixtures
            logits, means, raw = out[..., :m], out[..., m : 2 * m], out[..., 2 * m :]
            return discretized_logistic_log_prob(
                target, logits, means, self._log_scale(raw), levels=self.levels
            )
        return bernoulli_log_prob(target, out[..., 0])

    def targets(self, x: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(encoder input in [-1, 1], decoder target) from the pipeline's images, per-example keys `[B]`.

        The target is the dequantized image (gaussian), the integer values (logistic) or the binary image
        (bernoulli); see the module docstring.
        """
        k = pixels.to_levels(x, levels=self.levels, dequantized=self.dequantized)  # [B, H, W, C] int32
        clean = pixels.to_signed(k, levels=self.levels)
        if self.options.decoder == "gaussian":
            u = jax.vmap(lambda key: jax.random.uniform(key, self.data_shape))(keys)  # [B, H, W, C]
            return clean, pixels.dequantized(k, u, levels=self.levels)
        if self.options.decoder == "logistic":
            return clean, k
        if self.options.binarize == "threshold":
            b = (2 * k > self.levels - 1).astype(jnp.int32)
        else:
            p = k.astype(jnp.float32) / (self.levels - 1)
            b = jax.vmap(lambda key, pi: jax.random.bernoulli(key, pi))(keys, p).astype(jnp.int32)
        return pixels.to_signed(b, levels=2), b

    def bits_from_nats(self, log_px: jax.Array) -> jax.Array:
        """Bits/dim of the discrete data from log-likelihoods (bounds) in nats (see the module docstring)."""
        bits = -log_px / (self.num_dims * math.log(2.0))
        if self.options.decoder == "gaussian":
            return bits + pixels.bits_offset(self.levels)
        return bits

    # --- The family interface. ---

    def init(self, key: jax.Array) -> Any:
        return self.model.init(key, jnp.zeros((1, *self.data_shape), jnp.float32))["params"]

    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        """The negative ELBO per dimension (nats), batch mean; metrics in bits/dim.

        Args:
          params: `{"encoder", "decoder"}`.
          batch: `{"x": [B, H, W, C]}` from the pipeline.
          keys: `[B]` per-example keys (dequantization or binarisation, and the latent sample).
        """
        x = batch["x"]
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"Batch examples have shape {tuple(x.shape[1:])}, the VAE expects {self.data_shape}."
            )
        target_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        latent_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        x_in, target = self.targets(x, target_keys)
        mean, log_var = self.encode(params, x_in)  # [B, h, w, c] each
        eps = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:]))(latent_keys)  # [B, h, w, c]
        z = mean + jnp.exp(0.5 * log_var) * eps  # Reparameterisation (Kingma & Welling 2014, sec. 2.4).
        log_px = self.log_likelihood_given(params, z, target)  # [B]
        kl = gaussian_kl(mean, log_var)  # [B]
        objective = elbo(log_px, kl, kl_weight=self.options.kl_weight)  # [B]
        nats = 1.0 / self.num_dims
        bits = nats / math.log(2.0)
        metrics = {
            "elbo_bpd": jnp.mean(self.bits_from_nats(elbo(log_px, kl))),
            "recon_bpd": jnp.mean(self.bits_from_nats(log_px)),
            "kl_bpd": jnp.mean(kl) * bits,
        }
        return -jnp.mean(objective) * nats, metrics

    def log_weights(self, params: Any, x: jax.Array, key: jax.Array, *, num_samples: int) -> jax.Array:
        """log w_k = log p(x, z_k) - log q(z_k|x) for K latents z_k ~ q(z|x) per example, `[K, B]`, nats.

        Args:
          params: VAE parameters.
          x: images `[B, H, W, C]` from the pipeline.
          key: PRNG key (dequantization or binarisation, then the K latents of each example).
          num_samples: K; the K decoder passes run one after another (`lax.map`), so memory is that of one.
        """
        target_key, latent_key = jax.random.split(key)
        x_in, target = self.targets(x, jax.random.split(target_key, x.shape[0]))
        mean, log_var = self.encode(params, x_in)
        std = jnp.exp(0.5 * log_var)

        def log_weight(sample_key):
            z = mean + std * jax.random.normal(sample_key, mean.shape)  # [B, h, w, c]
            log_q = gaussian_log_prob(z, mean, 0.5 * log_var)  # [B]
            return self.log_likelihood_given(params, z, target) + standard_normal_log_prob(z) - log_q

        return jax.lax.map(log_weight, jax.random.split(latent_key, num_samples))  # [K, B]

    def log_likelihood(
        self, params: Any, x: jax.Array, key: jax.Array, *, num_samples: int | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """The IWAE bound and the ELBO estimate from the same K latent samples, per example, in nats.

        Args:
          params: VAE parameters.
          x: images `[B, H, W, C]` from the pipeline.
          key: PRNG key.
          num_samples: K (default `iwae_samples`).

        Returns:
          `(iwae [B], elbo [B])`, log p(x) >= iwae >= elbo in expectation; convert with `bits_per_dim`.
        """
        k = self.options.iwae_samples if num_samples is None else num_samples
        log_w = self.log_weights(params, x, key, num_samples=k)
        return iwae_bound(log_w), jnp.mean(log_w, axis=0)

    def bits_per_dim(
        self, params: Any, key: jax.Array, x: jax.Array, labels: jax.Array | None, **options: Any
    ) -> tuple[jax.Array, jax.Array]:
        """Bits/dim `[B]` of test images by the IWAE bound with `options.iwae_samples` latents (Burda et al.
        2016; the module docstring gives each decoder's convention), and the K decoder passes it took.

        Args:
          params: VAE parameters.
          key: PRNG key (dequantization or binarisation, the latents).
          x: `[B, H, W, C]` integer levels, as the dataset stores them.
          labels: unused (the VAE is unconditional).
          **options: unused (the ODE estimator's options).
        """
        del labels, options
        # The pipeline's images: bin centres recover k exactly under the dequantized convention too.
        images = (
            pixels.bin_centres(x, levels=self.levels)
            if self.dequantized
            else pixels.to_signed(x, levels=self.levels)
        )
        iwae, _ = self.log_likelihood(params, images, key)
        return self.bits_from_nats(iwae), jnp.asarray(self.options.iwae_samples)

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        """Decoder means of `num` latents z ~ N(0, I), `[num, H, W, C]` in [-1, 1]."""
        z = jax.random.normal(key, (num, *self.latent_shape))
        return self.decode_mean(params, z)
