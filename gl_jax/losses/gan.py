"""GAN objectives: each player's loss from discriminator outputs, and the gradient penalties.

Every function takes the discriminator's raw outputs (logits / critic values) `[B]` on real and generated
examples and returns per-example losses `[B]`, so the family averages them and the result does not depend
on how a batch is split over devices. Losses are written to be *minimised* by the player they belong to.

  "non_saturating"  L_D = softplus(-D(x)) + softplus(D(G(z))), L_G = softplus(-D(G(z))): the minimax
                    game's discriminator and the generator's non-saturating -log D(G(z)) (Goodfellow et al.
                    2014, sec. 3), with D(.) = sigmoid(logit).
  "hinge"           L_D = relu(1 - D(x)) + relu(1 + D(G(z))), L_G = -D(G(z)) (Lim & Ye 2017; Miyato et al.
                    2018, eq. 17).
  "wasserstein"     L_D = D(G(z)) - D(x), L_G = -D(G(z)), the critic of the Kantorovich-Rubinstein dual;
                    needs a Lipschitz constraint: the gradient penalty (Gulrajani et al. 2017, eq. 3) or
                    spectral normalisation (Miyato et al. 2018).

Penalties: `r1_penalty` (Mescheder et al. 2018, eq. 9), `gradient_penalty` (Gulrajani et al. 2017).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "GAN_LOSSES",
    "discriminator_loss",
    "generator_loss",
    "r1_penalty",
    "gradient_penalty",
]

GAN_LOSSES = ("non_saturating", "hinge", "wasserstein")

CriticFn = Callable[[jax.Array], jax.Array]


def _check(loss: str) -> None:
    if loss not in GAN_LOSSES:
        raise ValueError(f"Unknown GAN loss {loss!r}; choose one of {GAN_LOSSES}.")


def discriminator_loss(real: jax.Array, fake: jax.Array, *, loss: str = "non_saturating") -> jax.Array:
    """The discriminator's (critic's) per-example loss.

    Args:
      real: D's outputs on data, `[B]`.
      fake: D's outputs on generated examples, `[B]`.
      loss: one of `GAN_LOSSES`.

    Returns:
      `[B]` losses, to be minimised over D's parameters.
    """
    _check(loss)
    if loss == "non_saturating":
        # -log sigmoid(r) - log(1 - sigmoid(f)) (Goodfellow et al. 2014, eq. 1).
        return jax.nn.softplus(-real) + jax.nn.softplus(fake)
    if loss == "hinge":
        return jax.nn.relu(1.0 - real) + jax.nn.relu(1.0 + fake)
    return fake - real


def generator_loss(fake: jax.Array, *, loss: str = "non_saturating") -> jax.Array:
    """The generator's per-example loss from D's outputs on its examples, `[B] -> [B]`.

    The non-saturating form -log sigmoid(f) has strong gradients when D rejects the samples, where the
    minimax log(1 - sigmoid(f)) saturates (Goodfellow et al. 2014, sec. 3).
    """
    _check(loss)
    if loss == "non_saturating":
        return jax.nn.softplus(-fake)
    return -fake


def _input_grads(critic: CriticFn, x: jax.Array) -> jax.Array:
    """d D(x_i) / d x_i for every example, `[B, ...]`.

    The critic treats examples independently (no batch statistics), so the gradient of the batch sum holds
    each example's own gradient.
    """
    return jax.grad(lambda y: jnp.sum(critic(y)))(x)


def _sq_norm(g: jax.Array) -> jax.Array:
    return jnp.sum(jnp.reshape(g, (g.shape[0], -1)) ** 2, axis=-1)  # [B]


def r1_penalty(critic: CriticFn, x_real: jax.Array) -> jax.Array:
    """R1 = ||grad_x D(x)||^2 on real data, `[B]` (Mescheder et al. 2018, eq. 9, without the gamma / 2).

    Penalising the critic's gradient on the data makes simultaneous gradient descent converge locally to
    the equilibrium where the generator matches the data (ibid., theorem 4.1). The gradient is
    differentiable in the critic's parameters (double back-propagation), so the penalty trains D.

    Args:
      critic: `x [B, ...] -> [B]`, the discriminator with its parameters bound.
      x_real: data `[B, ...]`.

    Returns:
      `[B]` squared gradient norms; zero for a critic that does not depend on its input.
    """
    return _sq_norm(_input_grads(critic, x_real))


def gradient_penalty(critic: CriticFn, x_real: jax.Array, x_fake: jax.Array, eps: jax.Array) -> jax.Array:
    """WGAN-GP's (||grad_x D(x_hat)|| - 1)^2, x_hat = eps x + (1 - eps) x_fake (Gulrajani et al. 2017, eq. 3).

    Args:
      critic: `x [B, ...] -> [B]`.
      x_real: data `[B, ...]`.
      x_fake: generated examples `[B, ...]` (pass them through `stop_gradient`: the penalty trains D only).
      eps: `[B]` interpolation weights, U[0, 1] per example.

    Returns:
      `[B]` penalties.
    """
    eps = jnp.reshape(eps, (-1,) + (1,) * (x_real.ndim - 1))
    x_hat = eps * x_real + (1.0 - eps) * x_fake  # [B, ...]
    # sqrt of a sum of squares has an infinite derivative at 0; the small constant keeps it finite.
    norm = jnp.sqrt(_sq_norm(_input_grads(critic, x_hat)) + 1e-12)  # [B]
    return (norm - 1.0) ** 2
