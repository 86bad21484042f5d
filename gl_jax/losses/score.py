"""Denoising score matching (Vincent 2011; Song et al. 2021, eq. 7).

For x_t = alpha(t) x_0 + sigma(t) eps the conditional score is -eps / sigma(t), so

  L(theta) = E_{t, x_0, eps} [ lambda(t) || s_theta(x_t, t) + eps / sigma(t) ||^2 ],

and with the weighting lambda(t) = sigma(t)^2 ("sigma2", Song et al. 2021, sec. 3.3) the integrand is
|| sigma(t) s_theta(x_t, t) + eps ||^2, the DDPM noise-prediction loss (Ho et al. 2020, eq. 14) in
continuous time. The minimiser is the score of the noised marginal, whatever the weighting.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gl_jax.rng import per_example_keys
from gl_jax.sde import GaussianDiffusion

__all__ = ["denoising_score_matching", "WEIGHTINGS"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

WEIGHTINGS = ("sigma2",)


def denoising_score_matching(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: GaussianDiffusion,
    x0: jax.Array,
    *,
    weighting: str = "sigma2",
    reduce: str = "mean",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Continuous-time denoising score matching loss of a batch.

    Args:
      key: one PRNG key, or `[B]` per-example keys (each example's t and eps come from its own key).
      score_fn: `score_fn(x_t, t) -> score`, with `x_t` `[B, ...]` and `t` `[B]`.
      sde: the forward process.
      x0: clean data `[B, ...]`.
      weighting: `"sigma2"`: lambda(t) = sigma(t)^2.
      reduce: how to reduce over data dimensions: `"mean"` or `"sum"` (score_sde's `reduce_mean`).

    Returns:
      `(loss, metrics)`: the batch mean of the weighted loss (a scalar) and a dict with `"loss"`.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Unknown weighting {weighting!r}; choose one of {WEIGHTINGS}.")
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}.")
    batch = x0.shape[0]
    keys = per_example_keys(key, batch)

    def draw(k):
        k_t, k_eps = jax.random.split(k)
        t = jax.random.uniform(k_t, (), minval=sde.t_min, maxval=sde.T)
        eps = jax.random.normal(k_eps, x0.shape[1:])
        return t, eps

    t, eps = jax.vmap(draw)(keys)  # [B], [B, ...]
    mean, std = sde.marginal(x0, t)
    x_t = mean + std * eps
    score = score_fn(x_t, t)
    # sigma2 weighting: lambda(t) || s + eps / sigma ||^2 = || sigma s + eps ||^2.
    residual = jnp.reshape(std * score + eps, (batch, -1))  # [B, D]
    per_example = jnp.mean(residual**2, axis=-1) if reduce == "mean" else jnp.sum(residual**2, axis=-1)
    loss = jnp.mean(per_example)
    return loss, {"loss": loss}
