"""Latent diffusion (Rombach et al. 2022): score-based diffusion on the latents of a trained VAE.

The VAE comes from a checkpoint that `gl_jax.train.checkpoint.Checkpointer` wrote for a run of the `vae`
family (its `params` or `ema_params`), rebuilt from the same model and `vae` options. The family composes
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
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gl_jax.data.sources import DataSpec
from gl_jax.families.base import options_from_config, typed_options
from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.families.vae import VAE, VAEOptions

__all__ = ["LatentDiffusion", "LatentOptions", "load_params", "find_checkpoint"]

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class LatentOptions:
    """`config.latent`.

    Attributes:
      vae_checkpoint: the VAE run's workdir, its `checkpoints` folder, or one step folder in it.
      vae_model: the VAE run's `config.model` (the autoencoder must be rebuilt exactly).
      vae: the VAE run's `config.vae`.
      vae_step: the checkpoint step to read (-1: the latest).
      vae_use_ema: read the EMA parameters (else the raw ones).
      allow_random_vae: with no `vae_checkpoint`, use a randomly initialised VAE (smoke runs only).
      encode: "sample" (z ~ q(z|x), as Rombach et al.) or "mean" (the posterior mean).
      scale: latents are multiplied by this before diffusion (and divided after sampling).
    """

    vae_checkpoint: str = ""
    vae_model: dict = dataclasses.field(default_factory=dict)
    vae: dict = dataclasses.field(default_factory=dict)
    vae_step: int = -1
    vae_use_ema: bool = True
    allow_random_vae: bool = False
    encode: str = "sample"
    scale: float = 1.0


def find_checkpoint(path: str, *, step: int = -1) -> str:
    """The `state` folder of a checkpoint: `path` is a workdir, its `checkpoints` folder or a step folder.

    Raises:
      FileNotFoundError: no checkpoint there (or not of that step), naming what was looked for.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(os.path.join(path, "state")):
        return os.path.join(path, "state")
    folder = os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
    steps = sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []
    if not steps:
        raise FileNotFoundError(
            f"No checkpoint in {folder}: config.latent.vae_checkpoint must name the workdir of a trained "
            "VAE run (train one with the matching experiments/*_vae.py first)."
        )
    chosen = steps[-1] if step < 0 else step
    if chosen not in steps:
        raise FileNotFoundError(f"No checkpoint of step {chosen} in {folder}; it has steps {steps}.")
    return os.path.join(folder, str(chosen), "state")


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def load_params(path: str, target: Any, *, step: int = -1, use_ema: bool = True) -> Any:
    """Parameters of a run from a checkpoint `Checkpointer` wrote, checked against `target`'s structure.

    Only the `params` or `ema_params` entry of the saved train state is used, so the optimizer that wrote
    the checkpoint does not matter.

    Args:
      path: see `find_checkpoint`.
      target: a tree of the expected arrays (or `jax.ShapeDtypeStruct`s), e.g. `jax.eval_shape(init, key)`.
      step: checkpoint step (-1: the latest).
      use_ema: read `ema_params` (else `params`).

    Returns:
      The parameters as NumPy arrays, in `target`'s structure.

    Raises:
      FileNotFoundError: no checkpoint (see `find_checkpoint`).
      ValueError: the checkpoint holds other parameter names or shapes than `target`, or its files do not
        match their checksums.
    """
    import orbax.checkpoint as ocp  # Only latent runs read other runs' checkpoints.

    from gl_jax.train import integrity

    state_dir = find_checkpoint(path, step=step)
    if problem := integrity.verify(os.path.dirname(state_dir)):
        raise ValueError(
            f"The VAE checkpoint {os.path.dirname(state_dir)} is corrupt ({problem}); name another step with "
            "config.latent.vae_step, or train the VAE again."
        )
    restored = ocp.StandardCheckpointer().restore(state_dir)
    entry = "ema_params" if use_ema else "params"
    params = jax.tree.map(np.asarray, restored[entry])
    saved, wanted = _shapes(params), _shapes(target)
    if saved != wanted:
        diff = sorted(set(saved) ^ set(wanted))
        if diff:
            detail = f"'{diff[0]}' is in one and not the other"
        else:
            name = next(k for k in sorted(wanted) if saved[k] != wanted[k])
            detail = f"'{name}' has shape {saved[name]} there and {wanted[name]} here"
        raise ValueError(
            f"The checkpoint {state_dir} does not hold this VAE ({detail}); set config.latent.vae_model and "
            "config.latent.vae to the config.model and config.vae of the run that wrote it."
        )
    return jax.tree.unflatten(jax.tree.structure(target), jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True)
class LatentDiffusion:
    """Diffusion on the latents of a VAE.

    Attributes:
      vae: the autoencoder family.
      diffusion: the diffusion family over latents shaped `vae.latent_shape`.
      vae_params: the trained VAE's parameters (NumPy arrays), or None for a random VAE (smoke runs).
        Not compared or hashed: a family is identified by its configuration.
      encode: "sample" or "mean", see `LatentOptions`.
      scale: see `LatentOptions`.
    """

    vae: VAE
    diffusion: ScoreDiffusion
    vae_params: Any = dataclasses.field(default=None, compare=False, repr=False)
    encode: str = "sample"
    scale: float = 1.0

    def __post_init__(self):
        if self.encode not in ("sample", "mean"):
            raise ValueError(f"config.latent.encode must be 'sample' or 'mean', got {self.encode!r}.")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, spec: DataSpec) -> LatentDiffusion:
        options = options_from_config(LatentOptions, config, "latent")
        if spec.kind != "image":
            raise ValueError(f"Latent diffusion needs images; dataset {spec.name!r} has {spec.kind} data.")
        vae = VAE.build(
            options.vae_model,
            typed_options(VAEOptions, options.vae, where="config.latent.vae"),
            spec,
            dequantized=config.data.dequantize,
            section="config.latent.vae_model",
        )
        latent_spec = DataSpec(
            name=f"latents of {spec.name}",
            kind="image",
            shape=vae.latent_shape,
            levels=None,
            num_classes=None,
            split_sizes=spec.split_sizes,
        )
        if options.vae_checkpoint:
            target = jax.eval_shape(vae.init, jax.random.key(0))
            vae_params = load_params(
                options.vae_checkpoint, target, step=options.vae_step, use_ema=options.vae_use_ema
            )
        elif options.allow_random_vae:
            vae_params = None
        else:
            raise ValueError(
                "config.latent.vae_checkpoint is empty: name the workdir of a trained VAE run (or set "
                "config.latent.allow_random_vae=True for a smoke run)."
            )
        return cls(
            vae=vae,
            diffusion=ScoreDiffusion.from_config(config, latent_spec),
            vae_params=vae_params,
            encode=options.encode,
            scale=options.scale,
        )

    def latents(self, vae_params: Any, x: jax.Array, keys: jax.Array) -> jax.Array:
        """Scaled latents `[B, *latent_shape]` of the pipeline's images, per-example keys `[B]`."""
        target_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        x_in, _ = self.vae.targets(x, target_keys)  # The encoder's input, as in VAE training.
        mean, log_var = self.vae.encode(vae_params, x_in)  # [B, h, w, c] each
        if self.encode == "mean":
            return self.scale * mean
        eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), mean.shape[1:]))(keys)
        return self.scale * (mean + jnp.exp(0.5 * log_var) * eps)

    def decode(self, vae_params: Any, z: jax.Array) -> jax.Array:
        """Images `[B, H, W, C]` in [-1, 1] from scaled latents."""
        return self.vae.decode_mean(vae_params, z / self.scale)

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
        z = self.diffusion.sample(params["diffusion"], key, num)  # [num, h, w, c]
        return self.decode(params["vae"], z)

    def optimizer(self, base) -> optax.GradientTransformation:
        """`config.optim`'s optimizer for the diffusion network; nothing moves the VAE."""
        transforms = {"diffusion": base(), "vae": optax.set_to_zero()}
        return optax.multi_transform(
            transforms, lambda params: {g: jax.tree.map(lambda _, g=g: g, t) for g, t in params.items()}
        )
