"""The one train step used by every model family.

`make_train_step(loss_fn)` turns a family's `loss(params, batch, keys) -> (loss, metrics)` into a pure
`train_step(state, batch, key) -> (state, metrics)`: gradients (optionally accumulated over micro-batches,
in bf16 compute, with rematerialisation), the optax update, the EMA, and a guard that refuses non-finite
updates. It contains no device logic; `gl_jax.train.parallel` compiles it with `jax.jit` over a mesh, or
maps it with `jax.pmap`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gl_jax.train.precision import with_compute_dtype
from gl_jax.train.privacy import NOISE_STREAM, DPOptions, clipped_sums, noisy_mean
from gl_jax.train.state import TrainState

__all__ = [
    "make_train_step",
    "ema_decay_at",
    "ema_init_weight",
    "LossFn",
    "REMAT_POLICIES",
]

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]

# Config names to `jax.checkpoint` policies for the loss; "none" means no rematerialisation.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,  # Keep only the inputs; recompute the forward.
    "dots": jax.checkpoint_policies.dots_saveable,  # Keep matmul/conv outputs; recompute the rest.
}


def _batch_size(batch: dict) -> int:
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1:
        raise ValueError(f"Every batch entry needs the same leading (batch) size, got sizes {sizes}.")
    return sizes.pop()


def _micro_batches(tree: Any, num: int) -> Any:
    """Splits every `[B, ...]` leaf into `[num, B / num, ...]`, micro-batch i holding examples i::num.

    The strided split (not contiguous blocks) keeps each micro-batch spread evenly over the devices a
    sharded batch lives on: device d holds a contiguous block of B / n examples, and every micro-batch
    takes B / (n num) of them, so no data moves between devices.
    """
    return jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // num, num, *x.shape[1:]), 0, 1), tree)


def ema_decay_at(step: jax.Array | int, decay: float, *, warmup: bool) -> jax.Array:
    """The EMA decay used by update number `step` (0-based).

    With warm-up, min(decay, (1 + step) / (10 + step)), the `num_updates` rule of TensorFlow's
    `tf.train.ExponentialMovingAverage`: the average forgets the random initialisation within the first
    updates instead of over ~1 / (1 - decay) of them. Without, the fixed `decay` (score_sde's EMA).
    """
    decay = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return decay
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_init_weight(step: int, decay: float, *, warmup: bool) -> float:
    """Weight of the initial parameters in the EMA after `step` updates: the product of the decays."""
    if not warmup:
        return float(decay) ** int(step)
    n = np.arange(int(step), dtype=np.float64)
    return float(np.exp(np.sum(np.log(np.minimum(float(decay), (1.0 + n) / (10.0 + n))))))


def make_train_step(
    loss_fn: LossFn,
    *,
    ema_decay: float = 0.999,
    ema_warmup: bool = False,
    axis_name: str | None = None,
    grad_accum_steps: int = 1,
    compute_dtype: Any | None = None,
    remat_policy: Callable[..., bool] | None = None,
    privacy: DPOptions | None = None,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Builds the pure train step.

    Each example's randomness comes from its own key, `split(fold_in(key, step), global_batch)[i]`, so the
    step computes the same numbers whether the global batch sits on one device, is sharded by `jax.jit`
    over many, is split across a `jax.pmap` axis, or is cut into micro-batches.

    Memory: gradient accumulation divides the activation memory by k: only one micro-batch's activations
    are live at a time (`python -m tests.train._memory` prints the compiled step's temporary bytes per
    option). On XLA:CPU the accumulation loop stays rolled, although convolution gradients run slowly
    inside a loop: unrolling it would give the memory back. A `jax.checkpoint` around the whole loss
    cannot lower the peak by itself, since the backward pass recomputes the whole forward pass at its
    start; it helps only where the compiler fuses the recomputed elementwise work into the backward
    kernels ("dots" keeps matmul/conv outputs and recomputes the rest), which XLA:CPU does not.
    Per-block `nn.remat` is the model's choice.

    Args:
      loss_fn: `loss_fn(params, batch, keys) -> (loss, metrics)` with `keys` `[B]` per-example PRNG keys
        (B the batch size this call sees) and `loss` the batch mean.
      ema_decay: decay of the parameter EMA (score_sde uses 0.9999 for DDPM++, 0.999 for NCSN++).
      ema_warmup: use `ema_decay_at`'s warm-up, min(ema_decay, (1 + n) / (10 + n)) at update n; for short
        runs, where ema_decay^num_steps of the initialisation would otherwise stay in the average.
      axis_name: the pmap axis name when the step runs under `jax.pmap` (gradients and metrics are
        averaged over it); None under `jax.jit`.
      grad_accum_steps: k; the batch is cut into k micro-batches whose gradients are summed in fp32 inside
        one `lax.scan`, so only one micro-batch's activations are live at a time. The update equals the
        full batch's up to summation order (the per-example keys are the full batch's). Metrics are
        averaged over micro-batches, which is exact for batch means. The batch this call sees must be
        divisible by k.
      compute_dtype: run the loss's forward and backward pass in this dtype (`jnp.bfloat16`) with the
        fp32 parameters as master weights; see `gl_jax.train.precision`. None: the parameters' dtype.
      remat_policy: wrap the loss in `jax.checkpoint` with this policy (see `REMAT_POLICIES`); None: no
        rematerialisation.
      privacy: differentially private gradients (`gl_jax.train.privacy`): per-example gradients (each
        loss averaged over `multiplicity` draws), clipped to `clip_norm`, summed over the examples whose
        `batch["mask"]` is 1 (all of them without a mask) and over micro-batches and devices, then
        N(0, (noise_multiplier clip_norm)^2) added once and the sum divided by `expected_batch_size`.
        The noise key is `fold_in(step key, privacy.NOISE_STREAM)`, the same on every device. The
        guard then reads the noised gradient and the update only (a per-example NaN counts as a zero
        gradient), and the metrics add `dp_examples` and `dp_clipped`. None: the ordinary step, whose
        numbers this option leaves unchanged.

    Returns:
      `train_step(state, batch, key) -> (state, metrics)`: `key` is the run's base key (the step's key is
      `fold_in(key, state.step)`, never stored); metrics hold the family's metrics plus `grad_norm`,
      `finite` (1.0 when the update was applied, 0.0 when a NaN/Inf in the loss, the gradients or the
      optimizer's update made the step keep the previous state) and `step` (the
      step number the metrics belong to).
    """
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}.")
    loss_fn = with_compute_dtype(loss_fn, compute_dtype)
    if remat_policy is not None:
        loss_fn = jax.checkpoint(loss_fn, policy=remat_policy)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulated_grads(params, batch, keys):
        """Mean loss, metrics and gradients over k micro-batches `[k, B / k, ...]`."""
        micro_batch, micro_keys = _micro_batches((batch, keys), grad_accum_steps)

        def add(total, micro):
            (loss, metrics), grads = grad_fn(params, *micro)
            return jax.tree.map(jnp.add, total, grads), (loss, metrics)

        zeros = jax.tree.map(jnp.zeros_like, params)  # fp32 accumulators, like the master weights.
        total, (losses, metrics) = jax.lax.scan(add, zeros, (micro_batch, micro_keys))
        mean = lambda tree: jax.tree.map(lambda x: jnp.mean(x, axis=0), tree)
        return (jnp.mean(losses), mean(metrics)), jax.tree.map(lambda g: g / grad_accum_steps, total)

    def private_grads(params, batch, keys, step_key):
        """`gl_jax.train.privacy.dp_gradients`, the clipped sums added over micro-batches and devices
        before the noise."""
        mask = batch.get("mask", jnp.ones(keys.shape, jnp.float32))  # [B]
        examples = {k: v for k, v in batch.items() if k != "mask"}
        sums_of = functools.partial(
            clipped_sums, loss_fn, params, clip_norm=privacy.clip_norm, multiplicity=privacy.multiplicity
        )
        if grad_accum_steps == 1:
            sums = sums_of(examples, keys, mask)
        else:
            micro = _micro_batches((examples, keys, mask), grad_accum_steps)
            zeros = jax.eval_shape(sums_of, *jax.tree.map(lambda x: x[0], micro))
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
            sums, _ = jax.lax.scan(
                lambda total, m: (jax.tree.map(jnp.add, total, sums_of(*m)), None), zeros, micro
            )
        if axis_name is not None:
            sums = jax.lax.psum(sums, axis_name)
        grads, loss, metrics = noisy_mean(sums, jax.random.fold_in(step_key, NOISE_STREAM), privacy)
        return (loss, metrics), grads

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

        if local % grad_accum_steps:
            raise ValueError(
                f"A batch of {local} examples (per device under pmap) cannot be cut into "
                f"grad_accum_steps={grad_accum_steps} equal micro-batches; make config.data.batch_size "
                "a multiple of grad_accum_steps times the number of devices."
            )
        if privacy is not None:
            (loss, metrics), grads = private_grads(state.params, batch, keys, step_key)
        elif grad_accum_steps == 1:
            (loss, metrics), grads = grad_fn(state.params, batch, keys)
        else:
            (loss, metrics), grads = accumulated_grads(state.params, batch, keys)
        if axis_name is not None and privacy is None:  # The private sums were added over devices already.
            grads, loss, metrics = jax.lax.pmean((grads, loss, metrics), axis_name)
        grad_norm = optax.global_norm(grads)

        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if ema_warmup:
            d = ema_decay_at(state.step, ema_decay, warmup=True)
            ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema_params, params)
        else:  # A fixed decay: a Python float, folded into the compiled step as a constant.
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
        # A finite loss and gradient can still give a non-finite update (a NaN or huge learning rate), so
        # the update is checked too, by its global norm: finite only when every u^2 is, so the new
        # parameters p + u of finite p are finite. That covers the rest of the state: with finite
        # gradients (every g^2 finite) Adam's moments stay finite, and the EMA of finite parameters is
        # finite. One norm is also far cheaper to compile than a check of every new leaf.
        # `Checkpointer.save` still refuses a state with a NaN or Inf anywhere.
        if privacy is None:
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(updates))
        else:  # Only the noised gradient and the update: the decision is post-processing (privacy.py).
            finite = jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(updates))
        # A non-finite step leaves everything but the counter as it was.
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
