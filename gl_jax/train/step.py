"""The one train step used by every model family.

`make_train_step(loss_fn)` turns a family's `loss(params, batch, keys) -> (loss, metrics)` into a pure
`train_step(state, batch, key) -> (state, metrics)`: gradients, the optax update, the EMA, and a guard
that refuses non-finite updates. It contains no device logic; `gl_jax.train.parallel` compiles it with
`jax.jit` over a mesh, or maps it with `jax.pmap`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gl_jax.train.state import TrainState

__all__ = ["make_train_step", "LossFn"]

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


def _batch_size(batch: dict) -> int:
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1:
        raise ValueError(f"Every batch entry needs the same leading (batch) size, got sizes {sizes}.")
    return sizes.pop()


def make_train_step(
    loss_fn: LossFn,
    *,
    ema_decay: float = 0.999,
    axis_name: str | None = None,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Builds the pure train step.

    Each example's randomness comes from its own key, `split(fold_in(key, step), global_batch)[i]`, so the
    step computes the same numbers whether the global batch sits on one device, is sharded by `jax.jit`
    over many, or is split across a `jax.pmap` axis.

    Args:
      loss_fn: `loss_fn(params, batch, keys) -> (loss, metrics)` with `keys` `[B]` per-example PRNG keys
        (B the batch size this call sees) and `loss` the batch mean.
      ema_decay: decay of the parameter EMA (score_sde uses 0.9999 for DDPM++, 0.999 for NCSN++).
      axis_name: the pmap axis name when the step runs under `jax.pmap` (gradients and metrics are
        averaged over it); None under `jax.jit`.

    Returns:
      `train_step(state, batch, key) -> (state, metrics)`: `key` is the run's base key (the step's key is
      `fold_in(key, state.step)`, never stored); metrics hold the family's metrics plus `grad_norm`,
      `finite` (1.0 when the update was applied, 0.0 when a NaN/Inf in the loss or gradients made the step
      keep the previous parameters) and `step` (the step number the metrics belong to).
    """

    def train_step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        step_key = jax.random.fold_in(key, state.step)
        local = _batch_size(batch)
        if axis_name is None:
            keys = jax.random.split(step_key, local)  # [B]
        else:
            # Same per-example keys as the unsplit global batch: take this device's slice.
            num = jax.lax.axis_size(axis_name)
            keys = jax.random.split(step_key, local * num)
            keys = jax.lax.dynamic_slice_in_dim(keys, jax.lax.axis_index(axis_name) * local, local)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, keys)
        if axis_name is not None:
            grads, loss, metrics = jax.lax.pmean((grads, loss, metrics), axis_name)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
        # A non-finite step leaves everything but the counter as it was, so nothing saved is poisoned.
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            ema_params=keep(ema, state.ema_params),
        )
        metrics = {
            **metrics,
            "loss": loss,
            "grad_norm": grad_norm,
            "finite": finite.astype(jnp.float32),
            "step": state.step,
        }
        return new_state, metrics

    return train_step
