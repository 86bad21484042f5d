"""optax optimizers and learning-rate schedules from a config section."""

from __future__ import annotations

import optax

__all__ = ["make_optimizer", "make_schedule", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


def make_schedule(
    *,
    lr: float,
    warmup_steps: int = 0,
    schedule: str = "constant",
    total_steps: int = 1,
    min_lr_ratio: float = 0.0,
) -> optax.Schedule:
    """Linear warm-up to `lr` over `warmup_steps`, then constant, or cosine decay to `min_lr_ratio * lr`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; choose one of {SCHEDULES}.")
    if schedule == "constant":
        after = optax.constant_schedule(lr)
    else:
        after = optax.cosine_decay_schedule(lr, max(total_steps - warmup_steps, 1), alpha=min_lr_ratio)
    if warmup_steps <= 0:
        return after
    warmup = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(
    *,
    optimizer: str = "adam",
    lr: float = 2e-4,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    schedule: str = "constant",
    total_steps: int = 1,
    min_lr_ratio: float = 0.0,
    grad_clip: float = 0.0,
) -> optax.GradientTransformation:
    """Adam or AdamW with an optional warm-up/cosine schedule and global-norm gradient clipping.

    score_sde's CIFAR-10 default is Adam, lr 2e-4, 5,000 warm-up steps, clipping at norm 1 (Song et al. 2021).

    Args:
      optimizer: `"adam"` or `"adamw"` (decoupled weight decay, Loshchilov & Hutter 2019).
      lr: peak learning rate.
      b1, b2, eps: Adam's moment decays and epsilon.
      weight_decay: AdamW's decay (must be 0 for adam).
      warmup_steps: linear warm-up length.
      schedule: `"constant"` or `"cosine"` after warm-up.
      total_steps: length of the run (for the cosine decay).
      min_lr_ratio: final learning rate of the cosine decay, relative to `lr`.
      grad_clip: clip gradients to this global norm (0 disables clipping).

    Returns:
      The optax transformation.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}.")
    if optimizer == "adam" and weight_decay:
        raise ValueError("weight_decay needs optimizer='adamw'; set config.optim.optimizer='adamw'.")
    sched = make_schedule(
        lr=lr,
        warmup_steps=warmup_steps,
        schedule=schedule,
        total_steps=total_steps,
        min_lr_ratio=min_lr_ratio,
    )
    if optimizer == "adam":
        opt = optax.adam(sched, b1=b1, b2=b2, eps=eps)
    else:
        opt = optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    if grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(grad_clip), opt)
    return opt
