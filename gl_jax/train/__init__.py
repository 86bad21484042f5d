"""Training: the state, the optimizer, the one train step (with gradient accumulation, mixed precision and
rematerialisation), its parallel and multi-process compilation, checkpoints, the loop."""

from gl_jax.train.optim import make_optimizer
from gl_jax.train.state import TrainState
from gl_jax.train.step import make_train_step

__all__ = ["TrainState", "make_optimizer", "make_train_step"]
