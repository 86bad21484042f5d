"""Guidance by a second score: classifier-free guidance in a limited interval of noise levels, and
autoguidance, as score wrappers `score(x, t)` that every sampler takes.

Both guide a main model D_1 by a guiding one D_0 (Karras et al. 2024, "Guiding a diffusion model with a
bad version of itself", eq. 1):

  D_w(x; sigma) = D_0(x; sigma) + w (D_1(x; sigma) - D_0(x; sigma)).

Classifier-free guidance takes D_1 = the conditional model and D_0 = the same network without the
condition (Ho & Salimans 2022); autoguidance takes D_0 = a weaker version of D_1 itself (fewer
parameters, fewer training steps), conditioned the same way.

Score or denoiser space. For a fixed (x, t), Tweedie's formula s = (alpha D - x) / sigma^2 is the same
affine map for both models, and the weights (1 - w, w) sum to one, so the offset -x / sigma^2 passes
through: (alpha D_w - x) / sigma^2 = s_0 + w (s_1 - s_0) exactly. The wrappers combine the scores
(no conversion, so the samplers' currency is untouched and nothing divides by alpha, which vanishes at the
end of a rectified flow); in floating point the two orders differ by rounding only (tested to 1e-5).

Limited interval (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval improves sample and
distribution quality in diffusion models", sec. 3): D_w where the noise level sigma lies in
(sigma_lo, sigma_hi], the main model D_1 (w = 1) elsewhere. The noise level is the noise-to-signal ratio
sigma(t) / alpha(t): x_t / alpha(t) = x_0 + (sigma(t) / alpha(t)) eps is EDM's x = x_0 + sigma n
(Karras et al. 2022, eq. 4), so one interval means the same noise for every process of `gl_jax.sde`. The
paper's ImageNet-512 EDM2-XXL result (FID 1.40 at w = 2.0) guides in (0.28, 5.42]; its reference code
selects the interval by step index of EDM's 32-step grid instead (steps 17 to 22 for FID, 13 to 19 with
w = 2.9 for FD_DINOv2), and EDM2's own `generate_images.py` has no interval.

Network evaluations. Outside the interval only D_1 runs: the choice is a `jax.lax.cond` on whether any
example of the batch is inside, which executes one branch (two evaluations inside, one outside) when the
batch shares its time, as it does in every sampler, also under `jax.vmap` over samples (the time grid is
not batched). A batch whose examples straddle an end evaluates both models and picks per example. A
`cond` whose predicate is itself batched (a `vmap` over per-sample times, e.g. adaptive ODE steps) turns
into a select, which runs both branches.

A sampler reports `nfe`, its number of calls of `score_fn`, fixed by its steps; a guided call costs one
or two network evaluations depending on t. `GuidedScore.evaluations(times)` counts the network
evaluations of calls at `times` (pure, jit-able), and `evaluation_times(sampler, sde, shape)` measures the
times at which a sampler calls its score, running it once on one sample with a stand-in score (exact for
every fixed-step sampler, whose times do not depend on the score). The honest count of a run is
`guided.evaluations(evaluation_times(sampler, sde, shape))`; the guided score itself stays pure, with no
counter threaded through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.samplers.base import ScoreFn
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = [
    "GuidedScore",
    "autoguided_score",
    "evaluation_times",
    "interval_guided_score",
    "noise_level",
]

Interval = tuple[float, float]


def noise_level(sde: GaussianDiffusion, t: jax.Array) -> jax.Array:
    """The noise-to-signal ratio sigma(t) / alpha(t) (EDM's sigma, Karras et al. 2022, eq. 4), like `t`."""
    return sde.sigma(t) / sde.alpha(t)


def _check_interval(interval: Interval | None) -> Interval | None:
    if interval is None:
        return None
    lo, hi = (float(v) for v in interval)
    if not 0.0 <= lo < hi:
        raise ValueError(
            f"A guidance interval (sigma_lo, sigma_hi] needs 0 <= sigma_lo < sigma_hi, got {interval}."
        )
    if lo == 0.0 and hi == float("inf"):
        # Every positive noise level: guidance everywhere, without the `cond` (which would only keep XLA
        # from fusing the combination with the sampler's update).
        return None
    return lo, hi


@dataclasses.dataclass(frozen=True, eq=False)
class GuidedScore:
    """The guided score s_0 + w (s_1 - s_0), in the interval of noise levels `interval` when given.

    Call it as `score(x, t)` (`x` `[B, ...]`, `t` `[B]`); its `evaluations` counts the network evaluations.

    Attributes:
      main: s_1(x, t), the score of the model being guided (conditional model, or the good model).
      guide: s_0(x, t), the guiding score (unconditional model, or the weaker model).
      sde: the forward process, whose sigma(t) / alpha(t) is the noise level of `interval`.
      w: guidance weight (1: `main` alone, one evaluation per call; 0: `guide` alone).
      interval: `(sigma_lo, sigma_hi)`: guide only where sigma_lo < sigma(t) / alpha(t) <= sigma_hi, use
        `main` alone elsewhere; None (or `(0, inf)`) guides at every noise level.
    """

    main: ScoreFn
    guide: ScoreFn
    sde: GaussianDiffusion
    w: float
    interval: Interval | None = None

    def __post_init__(self):
        object.__setattr__(self, "interval", _check_interval(self.interval))

    @property
    def _trivial(self) -> bool:
        """Whether w is the number 1 (known when tracing), so that the guide never needs evaluating."""
        return isinstance(self.w, int | float) and self.w == 1

    def guided_at(self, t: jax.Array) -> jax.Array:
        """Whether a call at times `t` (any shape) combines both models: a bool array like `t`."""
        t = jnp.asarray(t)
        if self._trivial:
            return jnp.zeros(t.shape, bool)
        if self.interval is None:
            return jnp.ones(t.shape, bool)
        lo, hi = self.interval
        level = noise_level(self.sde, t)
        return (level > lo) & (level <= hi)

    def evaluations(self, times: jax.Array) -> jax.Array:
        """Network evaluations of calls at `times` `[N]` (one time per call, shared by its batch): two per
        call inside the interval, one outside. A scalar int32 array; pure and jit-able.

        Args:
          times: `[N]` the times of the score calls, e.g. `evaluation_times(sampler, sde, shape)`.

        Returns:
          sum over calls of (2 if `guided_at(t)` else 1), per sample of the batch.
        """
        times = jnp.asarray(times)
        chex.assert_rank(times, 1)
        return jnp.sum(jnp.where(self.guided_at(times), 2, 1)).astype(jnp.int32)

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        chex.assert_shape(t, (x.shape[0],))
        if self._trivial:
            return self.main(x, t)
        if self.interval is None:
            return self._combine(self.guide(x, t), self.main(x, t))
        inside = self.guided_at(t)  # [B]
        s1 = self.main(x, t)

        def guide(x, t, s1):
            # Per example, for a batch whose times straddle an end of the interval.
            return jnp.where(broadcast_to_data(inside, x), self.guide(x, t), s1)

        # One branch runs: when the batch shares t, the guide is evaluated only inside the interval. Outside,
        # s_0 = s_1 makes the combination s_1 + w 0 = s_1 exactly; the combination itself stays outside the
        # `cond`, so XLA fuses it with the sampler's update as it fuses `guided_score`'s (bitwise equal).
        s0 = jax.lax.cond(jnp.any(inside), guide, lambda x, t, s1: s1, x, t, s1)
        return self._combine(s0, s1)

    def _combine(self, s0: jax.Array, s1: jax.Array) -> jax.Array:
        # s_0 + w (s_1 - s_0): the form of `guided_score`, so the two agree bitwise.
        return s0 + self.w * (s1 - s0)


def interval_guided_score(
    score_fn: Callable[[jax.Array, jax.Array, Any], jax.Array],
    cond: Any,
    sde: GaussianDiffusion,
    *,
    w: float,
    interval: Interval | None,
    null_cond: Any = None,
) -> GuidedScore:
    """Classifier-free guidance in a limited interval of noise levels (Kynkaanniemi et al. 2024, sec. 3).

    s(x, t) = s_u + w (s_c - s_u) where sigma_lo < sigma(t) / alpha(t) <= sigma_hi, s_c elsewhere (Ho &
    Salimans 2022, eq. 6, with their w + 1 = our w, as `gl_jax.samplers.conditional.guided_score`).

    Args:
      score_fn: `score_fn(x, t, c)`; `c = null_cond` asks for the unconditional score.
      cond: the condition, e.g. `[B]` labels.
      sde: the forward process (the noise level of `interval`).
      w: guidance weight (1: the conditional score alone).
      interval: `(sigma_lo, sigma_hi)` in noise-to-signal ratio; None guides everywhere, as `guided_score`.
      null_cond: the condition value meaning "none".

    Returns:
      A `GuidedScore`, called as `score(x, t)`.
    """
    return GuidedScore(
        main=lambda x, t: score_fn(x, t, cond),
        guide=lambda x, t: score_fn(x, t, null_cond),
        sde=sde,
        w=w,
        interval=interval,
    )


def autoguided_score(
    score_fn: ScoreFn,
    guide_fn: ScoreFn,
    sde: GaussianDiffusion,
    *,
    w: float,
    interval: Interval | None = None,
) -> GuidedScore:
    """Autoguidance: the model guided by a weaker version of itself (Karras et al. 2024, eq. 1).

    s(x, t) = s_g + w (s_m - s_g), the denoiser-space D_g + w (D_m - D_g) written in scores (the module
    docstring shows they are equal); Karras et al. guide at every noise level (`interval=None`).

    Args:
      score_fn: s_m(x, t), the main model (conditioned already, if it is conditional).
      guide_fn: s_g(x, t), the guiding model: the same task, a smaller or shorter-trained network,
        conditioned as the main one.
      sde: the forward process.
      w: guidance weight (EDM2's autoguided ImageNet-512 presets use 2.05 to 2.45).
      interval: optional `(sigma_lo, sigma_hi)` as in `interval_guided_score`.

    Returns:
      A `GuidedScore`, called as `score(x, t)`.
    """
    return GuidedScore(main=score_fn, guide=guide_fn, sde=sde, w=w, interval=interval)


def evaluation_times(
    sampler: Callable[..., Any],
    sde: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    key: jax.Array | None = None,
    score_fn: ScoreFn | None = None,
) -> np.ndarray:
    """The times at which `sampler` calls its score, in the order of the calls: `[nfe]` float64.

    A measurement, run once beside the sampling: the sampler is compiled and run with a score that reports
    each call's time to the host (an ordered `jax.debug.callback`, so calls inside `lax` loops are each
    seen, in order, and a call that does not run is not reported). The stand-in score is that of N(0, I)
    data, -x / (alpha^2 + sigma^2), on a batch of one: a fixed-step sampler calls at times set by its grid
    alone, so any score and batch give its times. An adaptive ODE solver's steps depend on the score, the
    starting noise and the batch: pass the real `score_fn`, `key` and `shape` for the times of that run.

    Args:
      sampler: a sampler with its options bound, `sampler(key, score_fn, sde, shape)`, e.g.
        `functools.partial(gl_jax.samplers.edm_sampler, steps=18)`.
      sde: the forward process.
      shape: the samples' shape `[B, ...]` (with the stand-in score, only `shape[1:]` is used).
      key: PRNG key of the run (default `jax.random.key(0)`).
      score_fn: the score to run with (default: the stand-in).

    Returns:
      `[nfe]` times; `GuidedScore.evaluations` of them is the run's number of network evaluations.
    """
    times: list[float] = []

    def record(t):
        times.append(float(t[0]))

    def recording(x, t):
        jax.debug.callback(record, t, ordered=True)
        if score_fn is not None:
            return score_fn(x, t)
        return -x / broadcast_to_data(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, x)

    key = jax.random.key(0) if key is None else key
    shape = tuple(shape) if score_fn is not None else (1, *tuple(shape)[1:])
    jax.block_until_ready(jax.jit(lambda k: sampler(k, recording, sde, shape))(key))
    jax.effects_barrier()  # Every reported time has reached the host.
    return np.asarray(times, np.float64)
