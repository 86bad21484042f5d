"""The family interface: what the trainer and the evaluator call, declared once with its defaults.

A family binds networks, an objective and a way of sampling. It is a frozen dataclass (hashable, so its
bound methods can be compiled with `jax.jit` and closed over) that subclasses `Family` and implements
`init`, `loss` and `sample`; everything else has a default here, which a family overrides to say what
more it can do. The trainer and the evaluator call these methods and read these class attributes, and
nothing else of a family.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import optax

from gl_jax.samplers import SampleResult

__all__ = ["Family", "Sampler"]

# A sampler with everything but the score bound: `sampler(key, score_fn, sde, shape) -> SampleResult`,
# e.g. `functools.partial(gl_jax.samplers.ddim, steps=50, eta=0.0)`.
Sampler = Callable[..., SampleResult]


class Family(abc.ABC):
    """A model family.

    Attributes:
      takes_samplers: whether `with_sampler` gives the family another sampler (the diffusion families);
        `--mode eval` compares sampler settings only for such a family.
      reports_bits_per_dim: whether `bits_per_dim` is implemented (test-set likelihood in `--mode eval`).
    """

    takes_samplers: ClassVar[bool] = False
    reports_bits_per_dim: ClassVar[bool] = False

    @abc.abstractmethod
    def init(self, key: jax.Array) -> Any:
        """The initial parameter tree; several networks are groups of one tree."""

    @abc.abstractmethod
    def loss(self, params: Any, batch: dict, keys: jax.Array) -> tuple[jax.Array, dict]:
        """The batch-mean loss and scalar metrics.

        Args:
          params: the parameter tree.
          batch: the pipeline's batch, `{"x": [B, ...]}` (and `"label": [B]` for labelled data).
          keys: `[B]` per-example PRNG keys: every example's randomness comes from its own key, so the step
            computes the same numbers however the batch is split over devices or micro-batches.
        """

    @abc.abstractmethod
    def sample(self, params: Any, key: jax.Array, num: int) -> jax.Array:
        """`num` samples `[num, *data_shape]` in the data's range (`num` static under `jax.jit`)."""

    @property
    def conditional(self) -> bool:
        """Whether the family models the data given class labels (`batch["label"]`)."""
        return False

    def optimizer(self, base: Callable[..., optax.GradientTransformation]) -> optax.GradientTransformation:
        """The optimizer of the whole parameter tree.

        The default is the config's optimizer, `base()`. A family whose parameter groups need their own
        optimizers (a GAN's two players, a frozen autoencoder) returns an `optax.multi_transform`.

        Args:
          base: `base(**overrides)` builds the config's optimizer (`config.optim`) with some options
            replaced, so a family states only what differs per group.
        """
        return base()

    def sample_counted(self, params: Any, key: jax.Array, num: int) -> SampleResult:
        """`sample` and the number of network evaluations it took (`nfe`; None where not counted)."""
        return SampleResult(self.sample(params, key, num), None)

    def sample_one(self, params: Any, key: jax.Array, index: jax.Array) -> SampleResult:
        """Sample number `index` `[1, ...]` of a batch drawn one sample at a time (`compile_sampler`).

        The default is `sample_counted(params, key, 1)`; a class-conditional family draws class
        `index % num_classes`, so a batch cycles through the classes as `sample_counted` does.
        """
        del index
        return self.sample_counted(params, key, 1)

    def sample_conditional(self, params: Any, key: jax.Array, labels: jax.Array) -> SampleResult:
        """Samples of the given classes, one per label, and the NFE it took (a class-conditional family).

        Args:
          params: the parameters to sample with.
          key: PRNG key.
          labels: `[num]` integer class labels in [0, num_classes).

        Returns:
          `SampleResult(x [num, *data_shape], nfe)`; sample i is of class `labels[i]`.

        Raises:
          ValueError: the family models no class labels (the default; `conditional` is False).
        """
        del params, key, labels
        raise ValueError(
            f"{type(self).__name__} models no class labels, so it cannot sample given ones; train a "
            "class-conditional model (e.g. experiments/digits_vp_cond.py)."
        )

    def with_sampler(self, sampler: Sampler, *, threshold: str) -> Family:
        """This family sampling with `sampler` (and `threshold`, see `gl_jax.samplers.thresholding`).

        Raises:
          ValueError: the family samples one way only (the default).
        """
        raise ValueError(f"{type(self).__name__} samples one way only; it takes no sampler settings.")

    def bits_per_dim(
        self, params: Any, key: jax.Array, x: jax.Array, labels: jax.Array | None, **options: Any
    ) -> tuple[jax.Array, jax.Array]:
        """Per-example bits/dim `[B]` of data `x` (integer levels for images) and the NFE it took.

        Args:
          params: the parameters to evaluate.
          key: PRNG key (dequantization, trace probes).
          x: `[B, ...]` test examples as the dataset stores them.
          labels: `[B]` labels for class-conditional models, else None.
          **options: the likelihood estimator's options (`config.eval.bpd_*`).

        Raises:
          NotImplementedError: the family reports no likelihood (`reports_bits_per_dim` is False).
        """
        raise NotImplementedError(f"{type(self).__name__} reports no bits/dim.")
