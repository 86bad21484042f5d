"""Latent diffusion (Rombach et al. 2022): score-based diffusion on the latents of a trained VAE.

The VAE comes from a checkpoint of a run of the `vae` family (its `params` or `ema_params`, read by
`gl_jax.train.saved_params.load_params`), rebuilt from the same model and `vae` options. The family composes
the two existing ones: `VAE.encode` maps a batch to latents z = scale * (a sample of q(z|x), or its mean),
`ScoreDiffusion.loss` trains a network on them, and sampling runs `ScoreDiffusion.sample` in latent space
and decodes with `VAE.decode_mean`.

The VAE's parameters are a frozen group of the parameter tree, `{"diffusion": ..., "vae": ...}`: they
travel with the state (so a latent run's checkpoint samples on its own and they are not constants baked
into the compiled step), gradients never reach them (`stop_gradient`), and `optimizer` gives the group
`optax.set_to_zero()`, so no optimizer moves them (Adam alone would not either: a zero gradient gives a zero
Adam update; weight decay would).

`scale` plays the role of Rombach et al.'s scale factor (sec. 4.3.2, 1 / std of the latents): the
diffusion process assumes data of unit scale; the training metric `latent_ms` is the mean square of the
scaled latents, which should be near 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from gl_jax.families.base import Family, Sampler
from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.families.vae import VAE
from gl_jax.samplers import SampleResult

__all__ = ["LatentDiffusion", "LatentOptions", "ENCODINGS"]

ENCODINGS = ("sample", "mean")

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class LatentOptions:
    """How images become the latents the diffusion model learns.

    Attributes:
      encode: "sample" (z ~ q(z|x), as Rombach et al.) or "mean" (the posterior mean).
      scale: latents are multiplied by this before diffusion (and divided after sampling).
    """

    encode: str = "sample"
    scale: float = 1.0

    def __post_init__(self):
        if self.encode not in ENCODINGS:
            raise ValueError(f"Unknown encoding {self.encode!r}; choose one of {ENCODINGS}.")


@dataclasses.dataclass(frozen=True)
class LatentDiffusion(Family):
    """Diffusion on the latents of a VAE.

    Attributes:
      vae: the autoencoder family.
      diffusion: the diffusion family over latents shaped `vae.latent_shape`.
      vae_params: the trained VAE's parameters (NumPy arrays), or None for a random VAE (smoke runs).
        Not compared or hashed: a family is identified by its configuration.
      options: see `LatentOptions`.
    """

    takes_samplers: ClassVar[bool] = True

    vae: VAE
    diffusion: ScoreDiffusion
    vae_params: Any = dataclasses.field(default=None, compare=False, repr=False)
    options: LatentOptions = LatentOptions()

    def latents(self, vae_params: Any, x: jax.Array, keys: jax.Array) -> jax.Array:
        """Scaled latents `[B, *latent_shape]` of the pipeline's images, per-example keys `[B]`."""
        target_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        x_in, _ = self.vae.targets(x, target_keys)  # The encoder's input, as in VAE training.
        mean, log_var = self.vae.encode(vae_params, x_in)  # [B, h, w, c] each
        if self.options.encode == "mean":
            return self.options.scale * mean
        eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), mean.shape[1:]))(keys)
        return self.options.scale * (mean + jnp.exp(0.5 * log_var) * eps)

    def decode(self, vae_params: Any, z: jax.Array) -> jax.Array:
        """Images `[B, H, W, C]` in [-1, 1] from scaled latents."""
        return self.vae.decode_mean(vae_params, z / self.options.scale)

    # --- The family interface. ---

    def init(self, key: jax.Array) -> Any:
        diffusion_key, vae_key = jax.random.split(key)
        if self.vae_params is None:
            vae_params = self.vae.init(vae_key)
        else:
            vae_params = jax.tree.map(jnp.asarray, self.vae_params)
        return {"diffusion": self.diffusion.init(diffusion_key), "vae": vae_params}

    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        """The diffusion loss on the VAE latents of the batch (the VAE is held fixed).

        Args:
          params: `{"diffusion", "vae"}`.
          batch: `{"x": [B, H, W, C]}` from the pipeline.
          keys: `[B]` per-example keys.
        """
        encode_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        diffusion_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        z = self.latents(sg(params["vae"]), batch["x"], encode_keys)  # [B, h, w, c]
        loss, metrics = self.diffusion.loss(params["diffusion"], {"x": z}, diffusion_keys)
        return loss, {**metrics, "latent_ms": jnp.mean(jnp.square(z))}

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        """`num` images: diffusion samples in latent space, decoded to the decoder's mean."""
        return self.sample_counted(params, key, num).x

    def sample_counted(self, params: Any, key: jax.Array, num: int) -> SampleResult:
        """`sample` and the diffusion sampler's number of network evaluations."""
        z, nfe = self.diffusion.sample_counted(params["diffusion"], key, num)  # [num, h, w, c]
        return SampleResult(self.decode(params["vae"], z), nfe)

    def with_sampler(self, sampler: Sampler, *, threshold: str) -> LatentDiffusion:
        """The same model sampling its latents with `sampler`; latents have no image range to threshold.

        Raises:
          ValueError: `threshold` is not "none".
        """
        if threshold != "none":
            raise ValueError(
                f"Latents have no [-1, 1] range to keep; use threshold 'none', not {threshold!r}."
            )
        return dataclasses.replace(self, diffusion=self.diffusion.with_sampler(sampler, threshold="none"))

    def optimizer(self, base) -> optax.GradientTransformation:
        """The base optimizer for the diffusion network; nothing moves the VAE."""
        transforms = {"diffusion": base(), "vae": optax.set_to_zero()}
        return optax.multi_transform(
            transforms, lambda params: {g: jax.tree.map(lambda _, g=g: g, t) for g, t in params.items()}
        )
