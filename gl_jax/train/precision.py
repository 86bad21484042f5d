"""Mixed precision for any family: bf16 compute, fp32 master weights, fp32 loss and gradients.

The cast happens at the step/family boundary, so every family gets it without model changes:

1. the fp32 parameters are cast to the compute dtype on entry to the loss, so the gradient flows back
   through the cast and arrives in fp32 (the transpose of a cast is a cast back);
2. while the loss runs, a flax method interceptor casts the floating inputs of every flax layer whose
   `dtype` is left at None (`nn.Dense`, `nn.Conv`, the norms, attention) to the compute dtype, so the
   matmuls and convolutions run in bf16 (norm statistics stay fp32 inside flax);
3. the loss and metrics are cast back to fp32.

The batch itself is not cast: a family draws its noise and times inside the loss in fp32 and mixes them
with the data there (`x_t = alpha x + sigma eps` promotes back to fp32), so casting the batch would only
quantise the data; the interceptor is what puts the network's layers in bf16. Time embeddings built from
fp32 `t` before the first layer keep full precision. A layer the model pins to a dtype
(`nn.Dense(..., dtype=jnp.float32)`) is left as the model asks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["COMPUTE_DTYPES", "cast_floating", "with_compute_dtype"]

# Config names to dtypes; None keeps the parameters' own dtype. float16 is left out on purpose: its
# narrow exponent range needs loss scaling, which bf16 (fp32's exponent range) does not.
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Casts the floating-point array leaves of `tree` to `dtype`; integers, bools and keys are kept."""

    def cast(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x

    return jax.tree.map(cast, tree)


def _layer_input_caster(dtype: Any) -> Callable:
    """A flax interceptor casting the floating inputs of layers whose `dtype` is None to `dtype`."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and getattr(module, "dtype", False) is None:
            args, kwargs = cast_floating((args, kwargs), dtype)
        return next_fun(*args, **kwargs)

    return interceptor


def with_compute_dtype(loss_fn: Callable, compute_dtype: Any | None) -> Callable:
    """Wraps `loss_fn(params, batch, keys) -> (loss, metrics)` to compute in `compute_dtype`.

    Args:
      loss_fn: a family's loss.
      compute_dtype: e.g. `jnp.bfloat16`; None returns `loss_fn` unchanged.

    Returns:
      A loss with the same signature taking fp32 parameters (gradients w.r.t. them are fp32) and
      returning an fp32 loss and fp32 metrics.
    """
    if compute_dtype is None:
        return loss_fn
    interceptor = _layer_input_caster(compute_dtype)

    def loss(params, batch, keys):
        with nn.intercept_methods(interceptor):
            value, metrics = loss_fn(cast_floating(params, compute_dtype), batch, keys)
        return value.astype(jnp.float32), cast_floating(metrics, jnp.float32)

    return loss
