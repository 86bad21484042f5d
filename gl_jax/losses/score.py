"""Denoising score matching (Vincent 2011; Song et al. 2021, eq. 7) with the published weightings.

For x_t = alpha(t) x_0 + sigma(t) eps the conditional score is -eps / sigma(t), and every loss here is

  L(theta) = E_{t, x_0, eps} [ lambda(t) || s_theta(x_t, t) + eps / sigma(t) ||^2 ]

for a weighting lambda(t), whatever the network predicts (score, eps, x0 or v: the prediction is converted
to a score first, see `gl_jax.parametrization`), so the minimiser is the score of the noised marginal.
The weighting and the distribution of t are objects; `WEIGHTINGS` and `TIME_SAMPLINGS` map config names
to them.

Weightings (`gl_jax.losses.weightings`, re-exported here): each is one function w(lambda) of the log-SNR
on the eps loss (Kingma & Gao 2023): "sigma2", "likelihood" (= "elbo"), "edm", "min_snr", "sigmoid",
"flow_matching"; `weighting(sde, t)` is the factor on each example's || eps_hat - eps ||^2 (lambda(t) /
sigma(t)^2 above). `uncertainty_weighted_score_matching` adds EDM2's learned per-noise-level weighting.

Couplings (`gl_jax.losses.coupling`): noise drawn independently of the data, or re-paired to the batch's
minibatch optimal transport plan (`OTCoupling`, Tong et al. 2023's OT-CFM); t stays independent of the pair.

Time samplings:

- `UniformTimes` ("uniform"): t uniform on [t_min, T].
- `DiscreteTimes` ("discrete"): t uniform on the process's levels (DDPM's timesteps, NCSN's noise scales).
- `LogSNRTimes` ("log_snr"): uniform in log-SNR, importance sampling for the likelihood weighting (the
  density `abs(d lambda/dt)` is g^2/sigma^2, so the weighted integrand becomes constant in t; Song et al.
  2021b, sec. 5; Kingma et al. 2021, appendix I.2), with the importance weight applied so the objective is
  unchanged.
- `LogNormalTimes` ("edm"): ln(sigma/alpha) ~ N(p_mean, p_std^2), EDM's training distribution (which
  defines its objective).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from gl_jax.losses.coupling import COUPLINGS, Coupling, IndependentCoupling, OTCoupling
from gl_jax.losses.weightings import (
    WEIGHTINGS,
    EDMWeighting,
    FlowMatchingWeighting,
    LikelihoodWeighting,
    MinSNRWeighting,
    Sigma2Weighting,
    SigmoidWeighting,
    Weighting,
    log_snr_rate,
)
from gl_jax.parametrization import to_eps
from gl_jax.pixels import bin_centres
from gl_jax.registry import Registry
from gl_jax.rng import per_example_keys
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = [
    "denoising_score_matching",
    "uncertainty_weighted_score_matching",
    "vdm_elbo",
    "Weighting",
    "Sigma2Weighting",
    "LikelihoodWeighting",
    "EDMWeighting",
    "MinSNRWeighting",
    "SigmoidWeighting",
    "FlowMatchingWeighting",
    "IndependentCoupling",
    "OTCoupling",
    "COUPLINGS",
    "UniformTimes",
    "DiscreteTimes",
    "LogSNRTimes",
    "LogNormalTimes",
    "WEIGHTINGS",
    "TIME_SAMPLINGS",
]

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]

# Defaults of the losses: frozen dataclasses, made once.
SIGMA2 = Sigma2Weighting()
INDEPENDENT = IndependentCoupling()

# --- Time samplings: `sampling(key, sde) -> (t, weight)`, one example's time and its importance weight
# relative to uniform sampling on [t_min, T] (the loss multiplies by it).


@dataclasses.dataclass(frozen=True)
class UniformTimes:
    """t ~ U[t_min, T]."""

    def __call__(self, key: jax.Array, sde: GaussianDiffusion) -> tuple[jax.Array, jax.Array]:
        return jax.random.uniform(key, (), minval=sde.t_min, maxval=sde.T), jnp.ones(())


@dataclasses.dataclass(frozen=True)
class DiscreteTimes:
    """t uniform on `sde.timesteps()`, the levels of a discrete-time process (DiscreteDDPM, VESDE)."""

    def __call__(self, key: jax.Array, sde: GaussianDiffusion) -> tuple[jax.Array, jax.Array]:
        grid = sde.timesteps()
        if grid is None:
            raise ValueError(
                f"DiscreteTimes ('discrete') needs a process with discrete levels (DiscreteDDPM, VESDE), "
                f"got {sde}."
            )
        return grid[jax.random.randint(key, (), 0, grid.shape[0])], jnp.ones(())


@dataclasses.dataclass(frozen=True)
class LogSNRTimes:
    """log-SNR ~ U[log-SNR(T), log-SNR(t_min)], importance-weighted back to the uniform objective."""

    def __call__(self, key: jax.Array, sde: GaussianDiffusion) -> tuple[jax.Array, jax.Array]:
        ends = sde.log_snr(jnp.array([sde.T, sde.t_min], jnp.float32))
        lam = jax.random.uniform(key, (), minval=ends[0], maxval=ends[1])
        t = jnp.clip(sde.t_from_log_snr(lam), sde.t_min, sde.T)
        tb = t[None]
        density = log_snr_rate(sde, tb)[0] / (ends[1] - ends[0])  # p(t) = abs(d lambda/dt) / range.
        return t, 1.0 / (density * (sde.T - sde.t_min))


@dataclasses.dataclass(frozen=True)
class LogNormalTimes:
    """ln(sigma / alpha) ~ N(p_mean, p_std^2), EDM's noise-level distribution (Karras et al. 2022, table 1).

    Attributes:
      p_mean, p_std: the log-normal's mean and standard deviation.
    """

    p_mean: float = -1.2
    p_std: float = 1.2

    def __call__(self, key: jax.Array, sde: GaussianDiffusion) -> tuple[jax.Array, jax.Array]:
        log_s = self.p_mean + self.p_std * jax.random.normal(key, ())
        t = jnp.clip(sde.t_from_log_snr(-2.0 * log_s), sde.t_min, sde.T)
        return t, jnp.ones(())


TimeSampling = UniformTimes | DiscreteTimes | LogSNRTimes | LogNormalTimes

# Names a config may use for `config.loss.time_sampling` (`WEIGHTINGS` is in `gl_jax.losses.weightings`).
TIME_SAMPLINGS = Registry(
    "time_sampling",
    {"uniform": UniformTimes, "discrete": DiscreteTimes, "log_snr": LogSNRTimes, "edm": LogNormalTimes},
)


def _weighted_terms(
    key: jax.Array,
    model_fn: ModelFn,
    sde: GaussianDiffusion,
    x0: jax.Array,
    *,
    weighting: Weighting,
    prediction: str,
    time_sampling: TimeSampling,
    reduce: str,
    coupling: Coupling,
) -> tuple[jax.Array, jax.Array]:
    """Each example's weighted eps loss `[B]` and its time `[B]` (see `denoising_score_matching`)."""
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}.")
    batch = x0.shape[0]
    keys = per_example_keys(key, batch)

    def draw(k):
        k_t, k_eps = jax.random.split(k)
        t, weight = time_sampling(k_t, sde)
        return t, weight, jax.random.normal(k_eps, x0.shape[1:])

    t, importance, eps = jax.vmap(draw)(keys)  # [B], [B], [B, ...]
    # The coupling re-pairs noise with data; each example keeps its own t (Tong et al. 2023, alg. 2).
    eps = coupling(x0, eps)  # [B, ...]
    mean, std = sde.marginal(x0, t)
    x_t = mean + std * eps
    alpha = broadcast_to_data(sde.alpha(t), x0)
    output = model_fn(x_t, t)
    # Checked when traced: an output of another shape would broadcast against eps silently.
    chex.assert_equal_shape(
        [output, x_t], custom_message=f"model_fn(x_t, t) must predict {prediction} shaped like x_t"
    )
    eps_hat = to_eps(output, prediction, x_t, alpha, std)
    # lambda || s + eps / sigma ||^2 = (lambda / sigma^2) || eps_hat - eps ||^2 with s = -eps_hat / sigma.
    residual = jnp.reshape(eps_hat - eps, (batch, -1))  # [B, D]
    sq = jnp.mean(residual**2, axis=-1) if reduce == "mean" else jnp.sum(residual**2, axis=-1)
    return importance * weighting(sde, t) * sq, t


def denoising_score_matching(
    key: jax.Array,
    model_fn: ModelFn,
    sde: GaussianDiffusion,
    x0: jax.Array,
    *,
    weighting: Weighting = SIGMA2,
    prediction: str = "score",
    time_sampling: TimeSampling = UniformTimes(),
    reduce: str = "mean",
    coupling: Coupling = INDEPENDENT,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted denoising score matching loss of a batch.

    Args:
      key: one PRNG key, or `[B]` per-example keys (each example's t and eps come from its own key).
      model_fn: `model_fn(x_t, t)` with `x_t` `[B, ...]`, `t` `[B]`, predicting `prediction`.
      sde: the forward process.
      x0: clean data `[B, ...]`.
      weighting: a weighting object, e.g. `Sigma2Weighting()` or `WEIGHTINGS[name](**options)`.
      prediction: what `model_fn` predicts, a name in `gl_jax.parametrization.PREDICTIONS`.
      time_sampling: a time sampling object, e.g. `UniformTimes()` or `TIME_SAMPLINGS[name](**options)`.
      reduce: over data dimensions, "mean" or "sum" (score_sde's `reduce_mean`).
      coupling: how noise is paired with data: `IndependentCoupling()` or `OTCoupling()` (minibatch OT,
        Tong et al. 2023; the loss then depends on the whole batch, not each example alone).

    Returns:
      `(loss, metrics)`: the batch mean (a scalar) and `{"loss": loss}`.

    Raises:
      AssertionError: `model_fn`'s output is not shaped like `x_t` (a `chex` check, made when traced).
    """
    terms, _ = _weighted_terms(
        key,
        model_fn,
        sde,
        x0,
        weighting=weighting,
        prediction=prediction,
        time_sampling=time_sampling,
        reduce=reduce,
        coupling=coupling,
    )
    loss = jnp.mean(terms)
    return loss, {"loss": loss}


def uncertainty_weighted_score_matching(
    key: jax.Array,
    model_fn: ModelFn,
    log_var_fn: Callable[[jax.Array], jax.Array],
    sde: GaussianDiffusion,
    x0: jax.Array,
    *,
    weighting: Weighting = SIGMA2,
    prediction: str = "score",
    time_sampling: TimeSampling = UniformTimes(),
    reduce: str = "mean",
    coupling: Coupling = INDEPENDENT,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Denoising loss with EDM2's learned uncertainty weighting (Karras et al. 2024, sec. 5).

    L = mean_i [ l_i / e^u(lambda_i) + u(lambda_i) ], with l_i the example's weighted loss of
    `denoising_score_matching` and u the log-variance network at the example's log-SNR. Minimising over u
    gives e^u(lambda) = E[l | lambda] (d/du (l e^-u + u) = 0), so each noise level contributes about 1;
    the gradient wrt the denoiser is its weighted gradient divided by e^u.

    Args:
      key, model_fn, sde, x0, weighting, prediction, time_sampling, reduce, coupling: as in
        `denoising_score_matching`.
      log_var_fn: `log_var_fn(lam)` `[B]` -> u `[B]` at log-SNRs `lam`, e.g.
        `lambda lam: UncertaintyWeight().apply({"params": p_u}, lam)`, trained jointly with the denoiser.

    Returns:
      `(loss, metrics)`: the batch mean of the uncertainty-weighted loss, and `{"loss", "weighted_loss"
      (the batch mean of l, the loss without u), "log_var" (the batch mean of u)}`.
    """
    terms, t = _weighted_terms(
        key,
        model_fn,
        sde,
        x0,
        weighting=weighting,
        prediction=prediction,
        time_sampling=time_sampling,
        reduce=reduce,
        coupling=coupling,
    )
    u = log_var_fn(sde.log_snr(t))  # [B]
    chex.assert_equal_shape([u, terms], custom_message="log_var_fn(lam) must return one value per example")
    loss = jnp.mean(terms * jnp.exp(-u) + u)
    return loss, {"loss": loss, "weighted_loss": jnp.mean(terms), "log_var": jnp.mean(u)}


def vdm_elbo(
    key: jax.Array,
    eps_fn: ModelFn,
    sde: GaussianDiffusion,
    x_int: jax.Array,
    *,
    levels: int = 256,
    antithetic: bool = True,
) -> dict[str, jax.Array]:
    """The continuous-time variational bound of VDM (Kingma et al. 2021, eq. 11 and 17), per example.

    Library-only: for researchers' own VDM-style code (e.g. with `gl_jax.sde.LearnedSchedule`); no config
    or family computes it.

    Discrete data k in {0, ..., levels - 1} sits at the bin centres x = 2 (k + 1/2) / levels - 1 (VDM's
    convention). With gamma(t) = -log SNR(t) and z_t = alpha_t x + sigma_t eps on [t_min, T]::

      -log p(x) <= KL(q(z_T | x) || N(0, I))                                        (prior)
                   - E log p(x | z_{t_min})                                         (reconstruction)
                   + 1/2 E_{t ~ U} [(T - t_min) gamma'(t) || eps - eps_hat(z_t, t) ||^2]   (diffusion)

    where p(x | z) is VDM's factorised decoder: per pixel, a softmax over the levels of
    -1/2 ((z / alpha - x_k) alpha / sigma)^2. One t per example, antithetic across the batch (VDM's
    low-discrepancy sampler) when `antithetic`.

    Args:
      key: PRNG key.
      eps_fn: `eps_fn(z_t, t) -> eps_hat` with `z_t` `[B, ...]`, `t` `[B]`.
      sde: the process, e.g. `LearnedSchedule` (VDM) or any process in `gl_jax.sde`.
      x_int: integer data `[B, ...]` in {0, ..., levels - 1}.
      levels: number of discrete levels.
      antithetic: stratify t over the batch, t_i = (u + i / B) mod 1 scaled to [t_min, T].

    Returns:
      `{"prior", "reconstruction", "diffusion", "total"}` in nats `[B]`, and `"bpd"` (total / (D ln 2)).
    """
    batch = x_int.shape[0]
    dims = x_int[0].size
    x = bin_centres(x_int, levels=levels)
    k_t, k_eps, k_rec = jax.random.split(key, 3)
    ends = jnp.array([sde.t_min, sde.T], jnp.float32)
    flat = lambda v: jnp.reshape(v, (batch, -1))  # [B, D]

    # 1. Prior: KL(N(alpha_T x, sigma_T^2) || N(0, 1)), summed over dimensions.
    # sigma^2 - 1 - log sigma^2 = -alpha^2 + log(1 + SNR) for alpha^2 + sigma^2 = 1, without cancellation;
    # in general sigma^2 - 1 - log sigma^2 as written below.
    a_T, s_T = sde.alpha(ends[1:]), sde.sigma(ends[1:])
    vp = jnp.abs(a_T**2 + s_T**2 - 1.0) < 1e-6
    rest = jnp.where(vp, -(a_T**2) + jax.nn.softplus(sde.log_snr(ends[1:])), s_T**2 - 1.0 - jnp.log(s_T**2))
    prior = 0.5 * jnp.sum(a_T**2 * flat(x) ** 2 + rest, axis=-1)

    # 2. Reconstruction at t_min with VDM's per-pixel softmax decoder.
    a_0, s_0 = sde.alpha(ends[:1]), sde.sigma(ends[:1])
    z_0 = a_0 * x + s_0 * jax.random.normal(k_rec, x.shape)
    grid = bin_centres(jnp.arange(levels), levels=levels)  # [levels]
    logits = -0.5 * ((z_0[..., None] / a_0 - grid) * (a_0 / s_0)) ** 2  # [B, ..., levels]
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, x_int[..., None].astype(jnp.int32), axis=-1)[..., 0]
    reconstruction = -jnp.sum(flat(picked), axis=-1)

    # 3. Diffusion loss: 1/2 gamma'(t) || eps - eps_hat ||^2, gamma' = -d log SNR / dt.
    u = jax.random.uniform(k_t, ())
    u = jnp.mod(u + jnp.arange(batch) / batch, 1.0) if antithetic else jax.random.uniform(k_t, (batch,))
    t = sde.t_min + (sde.T - sde.t_min) * u  # [B]
    _, dlog_snr = jax.jvp(sde.log_snr, (t,), (jnp.ones_like(t),))
    eps = jax.random.normal(k_eps, x.shape)
    mean, std = sde.marginal(x, t)
    sq = jnp.sum(flat(eps - eps_fn(mean + std * eps, t)) ** 2, axis=-1)
    diffusion = 0.5 * (sde.T - sde.t_min) * (-dlog_snr) * sq

    total = prior + reconstruction + diffusion
    return {
        "prior": prior,
        "reconstruction": reconstruction,
        "diffusion": diffusion,
        "total": total,
        "bpd": total / (dims * jnp.log(2.0)),
    }
