"""The training state shared by every model family."""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import struct

__all__ = ["TrainState"]


class TrainState(struct.PyTreeNode):
    """Parameters, optimizer state and their exponential moving average.

    A GAN's two players are two groups of one `params` tree with their own optimizers (built with
    `optax.multi_transform`), so this one state serves every family.

    Attributes:
      step: number of updates applied so far (int32 scalar).
      params: the model parameters.
      opt_state: the optax state.
      ema_params: exponential moving average of `params` (used for sampling and evaluation).
      tx: the optax transformation (static: not part of the pytree).
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    ema_params: Any
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, params: Any, tx: optax.GradientTransformation) -> TrainState:
        """A fresh state at step 0, with the EMA starting at `params`."""
        return cls(
            step=jax.numpy.zeros((), jax.numpy.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=jax.tree.map(jax.numpy.copy, params),  # Own buffers: the state is donated.
            tx=tx,
        )
