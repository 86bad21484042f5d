"""Generative adversarial networks (Goodfellow et al. 2014) as a model family on the shared train step.

The two players are two groups of one parameter tree, `{"generator": ..., "discriminator": ...}`, trained
by one step. The family's loss is

  total = L_D(D; stop_gradient(G(z))) + L_G(G; stop_gradient(D)),

so one backward pass gives each player the gradient of its own objective and nothing else: D's parameters
see only L_D (the generator's output is held fixed there) and G's only L_G (D's parameters are held fixed
there). `optimizer` gives each group its own optax optimizer (`optax.multi_transform`), and both players
move at once from the same point: simultaneous gradient descent, the dynamics Mescheder et al. 2018 analyse
(with R1 it converges locally; their alternating variant would need a second forward pass after D's update,
which one pure step cannot have). WGAN-GP's several critic updates per generator update (Gulrajani et al.
2017, n_critic = 5) become `n_critic`: D steps every step, G every n_critic-th step with the mean of its last
n_critic gradients (`optax.MultiSteps`).

Spectral normalisation (Miyato et al. 2018) estimates each weight's largest singular value by power
iteration from a vector u kept between steps. u lives in a third group, `"spectral"`; the loss adds
`sum(u * stop_gradient(u - u_new)) - stop_gradient(...)`, which is zero in value and has gradient
u - u_new, and `optimizer` updates that group with SGD at rate 1, so after the step u = u_new: the
one-iteration-per-step scheme of the paper, through the shared step. The step's EMA of all parameters
gives the EMA generator used for sampling (Karras et al. 2018; Yazici et al. 2019).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gl_jax.families.base import Family
from gl_jax.losses.gan import GAN_LOSSES, discriminator_loss, generator_loss, gradient_penalty, r1_penalty

__all__ = ["GAN", "GANOptions"]

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class GANOptions:
    """The GAN's objective and its players' optimizers (`config.gan`).

    Attributes:
      objective: the GAN loss, one of `gl_jax.losses.gan.GAN_LOSSES`.
      r1_weight: gamma of the R1 penalty gamma / 2 E ||grad D(x)||^2 (Mescheder et al. 2018; 0: off).
      gp_weight: lambda of WGAN-GP's gradient penalty (Gulrajani et al. 2017 use 10; 0: off).
      n_critic: discriminator steps per generator step (see the module docstring).
      generator_optim, discriminator_optim: `(option, value)` pairs replacing options of the base
        optimizer for that player, e.g. `(("b1", 0.5), ("lr", 2e-4))` (DCGAN's Adam, Radford et al. 2016).
    """

    objective: str = "non_saturating"
    r1_weight: float = 0.0
    gp_weight: float = 0.0
    n_critic: int = 1
    generator_optim: tuple[tuple[str, Any], ...] = ()
    discriminator_optim: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.objective not in GAN_LOSSES:
            raise ValueError(f"Unknown GAN objective {self.objective!r}; choose one of {GAN_LOSSES}.")
        if self.n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {self.n_critic}.")


@dataclasses.dataclass(frozen=True)
class GAN(Family):
    """A GAN: `model.generate(z)` and `model.discriminate(x, update_stats=...)` over one parameter tree.

    Attributes:
      model: a module with `generate`, `discriminate` and `latent_dim`, whose `init(key, z)` creates
        `params` {"generator", "discriminator"} (and `batch_stats` for spectral normalisation), e.g. `DCGAN`.
      data_shape: shape of one example.
      options: the objective, penalties and per-player optimizer options.
    """

    model: nn.Module
    data_shape: tuple[int, ...]
    options: GANOptions = GANOptions()

    # --- The players. ---

    def latents(self, keys: jax.Array) -> jax.Array:
        """z ~ N(0, I), one per key: `[B]` keys -> `[B, latent_dim]`."""
        return jax.vmap(lambda k: jax.random.normal(k, (self.model.latent_dim,)))(keys)

    def generate(self, generator_params: Any, z: jax.Array) -> jax.Array:
        return self.model.apply({"params": {"generator": generator_params}}, z, method="generate")

    def discriminate(
        self, discriminator_params: Any, spectral: Any, x: jax.Array, *, update_stats: bool = False
    ) -> tuple[jax.Array, Any]:
        """D's logits `[B]` and, with `update_stats`, the new power-iteration state (else `spectral`)."""
        variables = {"params": {"discriminator": discriminator_params}}
        if spectral is None:
            return self.model.apply(variables, x, method="discriminate"), None
        variables["batch_stats"] = sg(spectral)  # Trained only through the straight-through term.
        if not update_stats:
            return self.model.apply(variables, x, method="discriminate"), spectral
        logits, updated = self.model.apply(
            variables, x, update_stats=True, method="discriminate", mutable=["batch_stats"]
        )
        return logits, updated["batch_stats"]

    # --- The family interface. ---

    def init(self, key: jax.Array) -> Any:
        variables = self.model.init(key, jnp.zeros((1, self.model.latent_dim), jnp.float32))
        params = dict(variables["params"])  # {"generator", "discriminator"}
        if "batch_stats" in variables:
            params["spectral"] = variables["batch_stats"]
        return params

    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        """L_D(D; stop_gradient(G)) + L_G(G; stop_gradient(D)), batch means, plus the penalties.

        Args:
          params: `{"generator", "discriminator"[, "spectral"]}`.
          batch: `{"x": [B, H, W, C]}` in [-1, 1].
          keys: `[B]` per-example keys (z and the penalty's interpolation weight).

        Returns:
          `(total, metrics)`; metrics hold each player's loss and D's mean outputs.
        """
        x = batch["x"]  # [B, H, W, C]
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"Batch examples have shape {tuple(x.shape[1:])}, the GAN expects {self.data_shape}."
            )
        z = self.latents(jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys))  # [B, Z]
        g, d, spectral = params["generator"], params["discriminator"], params.get("spectral")
        fake = self.generate(g, z)  # [B, H, W, C]

        # 1. The discriminator's objective: its parameters; the samples are held fixed.
        real_logits, new_spectral = self.discriminate(d, spectral, x, update_stats=True)  # [B]
        fake_logits, _ = self.discriminate(d, spectral, sg(fake))  # [B]
        loss_d = discriminator_loss(real_logits, fake_logits, loss=self.options.objective)  # [B]
        critic: Callable[[jax.Array], jax.Array] = lambda y: self.discriminate(d, spectral, y)[0]
        metrics = {}
        if self.options.r1_weight:
            r1 = r1_penalty(critic, x)  # [B]
            loss_d = loss_d + 0.5 * self.options.r1_weight * r1
            metrics["r1"] = jnp.mean(r1)
        if self.options.gp_weight:
            eps = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1), ()))(keys)  # [B]
            gp = gradient_penalty(critic, x, sg(fake), eps)  # [B]
            loss_d = loss_d + self.options.gp_weight * gp
            metrics["gradient_penalty"] = jnp.mean(gp)

        # 2. The generator's objective: its parameters; the discriminator is held fixed.
        g_logits, _ = self.discriminate(sg(d), spectral, fake)  # [B]
        loss_g = generator_loss(g_logits, loss=self.options.objective)  # [B]

        total = jnp.mean(loss_d) + jnp.mean(loss_g)
        if spectral is not None:
            # Zero in value, gradient u - u_new: SGD at rate 1 on this group sets u to u_new.
            pairs = zip(jax.tree.leaves(spectral), jax.tree.leaves(new_spectral), strict=True)
            total = total + sum(jnp.sum(u * sg(u - v)) - sg(jnp.sum(u * (u - v))) for u, v in pairs)
        metrics.update(
            d_loss=jnp.mean(loss_d),
            g_loss=jnp.mean(loss_g),
            d_real=jnp.mean(real_logits),
            d_fake=jnp.mean(fake_logits),
        )
        return total, metrics

    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        """`num` images from the generator (pass the EMA parameters for the EMA generator)."""
        z = self.latents(jax.random.split(key, num))  # [num, Z]
        return self.generate(params["generator"], z)

    def optimizer(self, base: Callable[..., optax.GradientTransformation]) -> optax.GradientTransformation:
        """One optimizer per player (`optax.multi_transform`), and SGD at rate 1 for the spectral state.

        Args:
          base: `base(**overrides)` builds the base optimizer with `overrides` replaced.
        """
        generator = base(**dict(self.options.generator_optim))
        if self.options.n_critic > 1:
            generator = optax.MultiSteps(
                generator, every_k_schedule=self.options.n_critic
            ).gradient_transformation()
        transforms = {
            "generator": generator,
            "discriminator": base(**dict(self.options.discriminator_optim)),
            "spectral": optax.sgd(1.0),
        }

        def labels(params):
            return {group: jax.tree.map(lambda _, g=group: g, tree) for group, tree in params.items()}

        return optax.multi_transform(transforms, labels)
