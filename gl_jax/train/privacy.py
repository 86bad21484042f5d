"""Differentially private training on the one train step: DP-SGD with Poisson sampling, and its accountant.

The mechanism of one step (Abadi et al. 2016, "Deep Learning with Differential Privacy", algorithm 1,
with Poisson sampling as in their moments accountant):

1. **Sampling.** Each of the N training examples joins the step's batch independently with probability
   q = B / N, B the expected batch size (`gl_jax.data.pipeline.make_poisson_dataset`). The batch has a
   fixed number M of slots (`config.data.batch_size`) so that the compiled step keeps one shape: the
   drawn examples fill the first slots and a mask marks them; the other slots hold a copy of an example
   with mask 0 and contribute nothing. When more than M are drawn, a uniformly random M of them are kept:
   truncated Poisson sampling, which the accountant counts as exactly that (with M a few standard
   deviations above B it almost never happens, and epsilon is that of plain Poisson sampling to a few
   digits).
2. **Per-example gradients.** g_i = grad of the family's loss on example i alone: the family's
   `loss(params, batch, keys)` is a mean over independent examples, so under `jax.vmap` it is called on a
   batch of one. With noise multiplicity K (Dockhorn et al. 2022, "Differentially Private Diffusion
   Models", sec. 3.2) the batch of one is K copies of the example with K keys split from its own key, so
   its loss is averaged over K draws of the diffusion time and noise before the gradient is clipped: the
   variance of g_i falls while its sensitivity stays C, so the privacy cost is unchanged.
3. **Clipping.** gbar_i = g_i min(1, C / norm(g_i)); a per-example gradient with a NaN or Inf counts as zero
   (either way the example moves the sum by at most C).
4. **Noise.** g = (sum_i m_i gbar_i + N(0, sigma^2 C^2 I)) / B with m_i the mask.

The denominator is the fixed expected batch size B = qN, not the number of examples drawn: that number
depends on the data, so dividing by it would release it without noise and break the bound C on one
example's effect; with B, g is an unbiased estimate of the mean clipped gradient, and the standard
deviation of its noise is sigma C / B in every coordinate.

What the guarantee covers: the parameters, their EMA (post-processing of the parameters; no privacy
cost) and everything computed from them (samples, losses on other data). The step's guard against
non-finite updates reads only the noised gradient and the update, so its decision is post-processing
too. The step's metrics (the loss, the number of examples drawn, the fraction clipped) are read from
the batch without noise: diagnostics for the researcher, outside the guarantee.

Accounting: dp_accounting's privacy loss distribution (PLD) accountant, with the event
`TruncatedSubsampledGaussianDpEvent(N, q, M, sigma)` composed over the steps, for add-or-remove-one
neighbouring datasets (the relation of Poisson sampling). dp_accounting is Google's accountant library
(jax-privacy itself depends on it); its PLD accountant is tighter than RDP at the same (q, sigma, steps)
and the only one of its accountants that knows truncated Poisson sampling, the sampling this code
really does. jax-privacy would bring the same accountant inside a training framework of its own, which
the one train step does not need.

References:
  Abadi et al. 2016, https://arxiv.org/abs/1607.00133; Dockhorn, Cao, Vahdat, Kreis 2022,
  https://arxiv.org/abs/2210.09929; truncated Poisson sampling: https://arxiv.org/abs/2508.15089.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

__all__ = [
    "DPOptions",
    "ClippedSums",
    "PrivacyAccountant",
    "PrivacyBudgetError",
    "PRIVATE_FAMILIES",
    "NOISE_STREAM",
    "dp_options",
    "per_example_grads",
    "clip_scale",
    "clipped_sums",
    "noisy_mean",
    "dp_gradients",
    "check_budget",
]

# Families whose loss is a mean over independent examples, so one example's gradient is the loss's on a
# batch of one. A GAN's discriminator loss mixes the batch's real examples with generated ones and has no
# per-example gradient to clip; a family added later joins this list once that holds for it.
PRIVATE_FAMILIES = ("score", "vae", "autoregressive", "latent")

# The step's noise key is fold_in(step_key, NOISE_STREAM): a stream apart from the per-example keys,
# which are split from the step key.
NOISE_STREAM = 0x6E6F6973


@dataclasses.dataclass(frozen=True)
class DPOptions:
    """Options of differentially private training (`config.privacy`, without `enabled`).

    Attributes:
      clip_norm: C, the bound on each example's gradient norm.
      noise_multiplier: sigma; the noise added to the sum of clipped gradients has standard deviation
        sigma C per coordinate.
      expected_batch_size: B = qN, the expected number of examples per step (q the sampling rate); also
        the denominator of the noised mean.
      multiplicity: K, draws of an example's randomness (diffusion time and noise) its loss is averaged
        over before clipping (DPDM's noise multiplicity); 1 for none.
      delta: the delta of the (epsilon, delta) guarantee; well below 1 / N.
      target_epsilon: the budget: a run whose steps would spend more is refused before it starts.
    """

    clip_norm: float
    noise_multiplier: float
    expected_batch_size: float
    multiplicity: int = 1
    delta: float = 1e-5
    target_epsilon: float = 10.0


def dp_options(config: ml_collections.ConfigDict) -> DPOptions | None:
    """`config.privacy` as `DPOptions`, or None when private training is off (or the config, a run's
    record from before the section, has none)."""
    if not config.get("privacy", {}).get("enabled", False):
        return None
    return DPOptions(**{k: v for k, v in config.privacy.items() if k != "enabled"})


def per_example_grads(
    loss_fn: Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]],
    params: Any,
    batch: dict,
    keys: jax.Array,
    *,
    multiplicity: int = 1,
) -> tuple[jax.Array, dict, Any]:
    """Each example's loss, metrics and gradient, the loss averaged over `multiplicity` draws.

    Example i's loss is `loss_fn(params, batch_i, keys_i)` on a batch of one: with multiplicity 1 the
    example with its own key (the per-example loss of the non-private step), with K > 1 K copies of it
    with `split(keys[i], K)`, whose batch mean is the average over K draws.

    Args:
      loss_fn: a family's `loss(params, batch, keys) -> (batch-mean loss, metrics)`, a mean over
        independent examples.
      params: the parameter tree.
      batch: `{"x": [M, ...], ...}`, no mask.
      keys: `[M]` per-example keys.
      multiplicity: K.

    Returns:
      `(losses [M], metrics {name: [M]}, grads)` with every leaf of `grads` `[M, *leaf.shape]`.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def one(example, key):
        if multiplicity == 1:
            copies, draws = jax.tree.map(lambda a: a[None], example), key[None]  # [1, ...], [1]
        else:
            copies = jax.tree.map(
                lambda a: jnp.broadcast_to(a, (multiplicity, *a.shape)), example
            )  # [K, ...]
            draws = jax.random.split(key, multiplicity)  # [K]
        (loss, metrics), grads = grad_fn(params, copies, draws)
        return loss, metrics, grads

    return jax.vmap(one)(batch, keys)


def clip_scale(norms: jax.Array, clip_norm: float) -> jax.Array:
    """The factor min(1, C / norm(g)) of each per-example gradient, 0 for a non-finite norm.

    The bound is C (1 - 2^-16): the norm is a float32 sum of squares, rounded by up to ~1e-6 of itself on
    large trees, and the margin keeps every clipped gradient's exact norm at or below C.
    """
    bound = clip_norm * (1.0 - 2.0**-16)
    scale = jnp.minimum(1.0, bound / jnp.maximum(norms, 1e-30))  # [M]
    return jnp.where(jnp.isfinite(norms), scale, 0.0)


class ClippedSums(NamedTuple):
    """Sums over the real examples of a batch, before the noise; additive over micro-batches and devices.

    Attributes:
      grads: sum_i m_i gbar_i, shaped like the parameters.
      loss: sum_i m_i loss_i.
      metrics: {name: sum_i m_i metric_i}.
      count: sum_i m_i, the number of real examples.
      clipped: the number of real examples whose gradient was scaled down (or was non-finite).
    """

    grads: Any
    loss: jax.Array
    metrics: dict
    count: jax.Array
    clipped: jax.Array


def clipped_sums(
    loss_fn: Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]],
    params: Any,
    batch: dict,
    keys: jax.Array,
    mask: jax.Array,
    *,
    clip_norm: float,
    multiplicity: int = 1,
) -> ClippedSums:
    """Steps 2 and 3 of the module docstring: per-example gradients, clipped to `clip_norm`, summed.

    Args:
      loss_fn: the family's loss (see `per_example_grads`).
      params: the parameter tree.
      batch: `{"x": [M, ...], ...}` without the mask.
      keys: `[M]` per-example keys.
      mask: `[M]`, 1 for a drawn example, 0 for a padding slot.
      clip_norm: C.
      multiplicity: K.
    """
    losses, metrics, grads = per_example_grads(loss_fn, params, batch, keys, multiplicity=multiplicity)
    norms = jax.vmap(optax.global_norm)(grads)  # [M]
    scale = clip_scale(norms, clip_norm)
    real = mask > 0
    weight = jnp.where(real, scale, 0.0)  # [M]
    # A non-finite gradient is zeroed before the weighted sum (0 * NaN would be NaN).
    finite = jnp.isfinite(norms)
    summed = jax.tree.map(
        lambda g: jnp.tensordot(weight, jnp.where(finite.reshape((-1,) + (1,) * (g.ndim - 1)), g, 0.0), 1),
        grads,
    )
    masked_sum = lambda v: jnp.sum(jnp.where(real, v, 0.0))
    return ClippedSums(
        grads=summed,
        loss=masked_sum(losses),
        metrics=jax.tree.map(masked_sum, metrics),
        count=jnp.sum(real.astype(jnp.float32)),
        clipped=jnp.sum((real & (scale < 1.0)).astype(jnp.float32)),
    )


def noisy_mean(sums: ClippedSums, key: jax.Array, options: DPOptions) -> tuple[Any, jax.Array, dict]:
    """Step 4: (sum + N(0, sigma^2 C^2 I)) / B, and the masked means of the loss and metrics.

    Returns:
      `(grads, loss, metrics)`: the private gradient; the mean loss over the drawn examples; their mean
      metrics plus `dp_examples` (how many were drawn) and `dp_clipped` (the fraction clipped).
    """
    std = options.noise_multiplier * options.clip_norm
    leaves, treedef = jax.tree.flatten(sums.grads)
    leaf_keys = jax.random.split(key, len(leaves))
    noised = [
        (g + std * jax.random.normal(k, g.shape, g.dtype)) / options.expected_batch_size
        for g, k in zip(leaves, leaf_keys, strict=True)
    ]
    count = jnp.maximum(sums.count, 1.0)  # A batch that drew nobody has loss and metrics 0.
    metrics = {
        **jax.tree.map(lambda s: s / count, sums.metrics),
        "dp_examples": sums.count,
        "dp_clipped": sums.clipped / count,
    }
    return jax.tree.unflatten(treedef, noised), sums.loss / count, metrics


def dp_gradients(
    loss_fn: Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]],
    params: Any,
    batch: dict,
    keys: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    options: DPOptions,
) -> tuple[tuple[jax.Array, dict], Any]:
    """The private gradient of one batch (steps 2 to 4 of the module docstring), in one call.

    `make_train_step(..., privacy=options)` does the same with micro-batches and devices summed between
    steps 3 and 4.

    Args:
      loss_fn: the family's loss.
      params: the parameter tree.
      batch: `{"x": [M, ...], ...}` without the mask.
      keys: `[M]` per-example keys.
      mask: `[M]`, 1 for a drawn example.
      key: the noise key.
      options: C, sigma, B, K.

    Returns:
      `((loss, metrics), grads)`, shaped like `jax.value_and_grad(loss_fn, has_aux=True)`'s result.
    """
    sums = clipped_sums(
        loss_fn, params, batch, keys, mask, clip_norm=options.clip_norm, multiplicity=options.multiplicity
    )
    grads, loss, metrics = noisy_mean(sums, key, options)
    return (loss, metrics), grads


# dp_accounting's PLDAccountant default: privacy losses rounded (pessimistically) to multiples of this.
_DISCRETIZATION = 1e-4


class PrivacyBudgetError(ValueError):
    """The configured steps would spend more than the privacy budget."""


@dataclasses.dataclass(frozen=True)
class PrivacyAccountant:
    """epsilon at delta of DP-SGD steps with truncated Poisson sampling, from dp_accounting's PLD accountant.

    Attributes:
      dataset_size: N, the training examples the batches are drawn from.
      expected_batch_size: B; the sampling rate is q = B / N.
      max_batch_size: M, the batch's slots (truncation above it); M >= N means plain Poisson sampling.
      noise_multiplier: sigma.
      delta: delta.
    """

    dataset_size: int
    expected_batch_size: float
    max_batch_size: int
    noise_multiplier: float
    delta: float

    @property
    def sampling_rate(self) -> float:
        """q = B / N."""
        return self.expected_batch_size / self.dataset_size

    def event(self, steps: int):
        """The `dp_accounting.DpEvent` of `steps` steps."""
        import dp_accounting  # Here, not at the top: it imports scipy.signal, which only private runs need.

        step = dp_accounting.TruncatedSubsampledGaussianDpEvent(
            dataset_size=self.dataset_size,
            sampling_probability=self.sampling_rate,
            truncated_batch_size=self.max_batch_size,
            noise_multiplier=self.noise_multiplier,
        )
        return dp_accounting.SelfComposedDpEvent(step, int(steps))

    @functools.cached_property
    def _step_loss_distribution(self):
        """The privacy loss distribution of one step, built once (the slow part for small sigma)."""
        import dp_accounting
        from dp_accounting.pld import privacy_loss_distribution

        return privacy_loss_distribution.from_truncated_subsampled_gaussian_mechanism(
            dataset_size=self.dataset_size,
            sampling_probability=self.sampling_rate,
            truncated_batch_size=self.max_batch_size,
            noise_multiplier=self.noise_multiplier,
            value_discretization_interval=_DISCRETIZATION,
            neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
        )

    def epsilon(self, steps: int) -> float:
        """epsilon after `steps` steps (0 for none), add-or-remove-one neighbours.

        The computation of `dp_accounting`'s `PLDAccountant().compose(self.event(steps))` followed by
        `get_epsilon(delta)`, step for step (the same number to the last bit, which the tests check), with
        the one-step distribution kept between calls: the loop asks at every log step.
        """
        from dp_accounting.pld import privacy_loss_distribution

        if steps <= 0:
            return 0.0
        composed = privacy_loss_distribution.identity(value_discretization_interval=_DISCRETIZATION).compose(
            self._step_loss_distribution.self_compose(int(steps))
        )
        return float(composed.get_epsilon_for_delta(self.delta))

    def max_steps(self, target_epsilon: float, *, at_most: int) -> int:
        """The most steps (up to `at_most`) whose epsilon stays <= `target_epsilon` (epsilon grows with the
        steps, so a bisection)."""
        low, high = 0, int(at_most)  # epsilon(low) <= target; find the last such step up to high.
        if self.epsilon(high) <= target_epsilon:
            return high
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if self.epsilon(mid) <= target_epsilon else (low, mid)
        return low


def check_budget(
    accountant: PrivacyAccountant, *, num_steps: int, target_epsilon: float, multiple: int = 1
) -> float:
    """epsilon after `num_steps` steps, or a one-line `PrivacyBudgetError` when it is over the target.

    Args:
      accountant: the run's accountant.
      num_steps: the run's `config.train.num_steps`.
      target_epsilon: `config.privacy.target_epsilon`.
      multiple: `config.train.steps_per_call`; the steps the message suggests are a multiple of it.

    Raises:
      PrivacyBudgetError: naming the epsilon the steps would reach, the steps the budget allows, and the fix.
    """
    spent = accountant.epsilon(num_steps)
    if spent <= target_epsilon:
        return spent
    allowed = accountant.max_steps(target_epsilon, at_most=num_steps)
    allowed -= allowed % multiple
    q = accountant.sampling_rate
    raise PrivacyBudgetError(
        f"config.train.num_steps={num_steps} would spend epsilon={spent:.3g} at delta={accountant.delta:g} "
        f"(q={q:.4g}, noise_multiplier={accountant.noise_multiplier:g}), over "
        f"config.privacy.target_epsilon={target_epsilon:g}; the budget allows {allowed} steps: set "
        f"--config.train.num_steps={allowed}, raise config.privacy.noise_multiplier or lower "
        "config.privacy.expected_batch_size."
    )
