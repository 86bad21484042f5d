"""Likelihoods of score-based diffusion models: exact ODE log-likelihoods, bits/dim and a variational bound.

* `ode_log_likelihood`: the log-density of the probability-flow ODE model by the instantaneous change of
  variables (Chen et al. 2018, "Neural Ordinary Differential Equations", theorem 1; Grathwohl et al. 2019,
  FFJORD; Song et al. 2021, "Score-Based Generative Modeling through SDEs", appendix D.2), with the exact
  divergence or Hutchinson's trace estimator (Hutchinson 1989).
* `bits_per_dim` and `uniform_dequantize`: the discrete-data conventions of Theis et al. 2016, "A note on
  the evaluation of generative models", as in Song et al. 2021, appendix D.
* `diffusion_elbo`: the continuous-time variational lower bound of the reverse-SDE model (Song et al.
  2021b, "Maximum Likelihood Training of Score-Based Diffusion Models", theorem 1; Huang et al. 2021,
  "A Variational Perspective on Diffusion-Based Generative Models and Score Matching").

All functions are pure and `jax.jit`-able (string and integer options are static).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import chex
import diffrax
import jax
import jax.numpy as jnp

from gl_jax.pixels import bits_offset, dequantized
from gl_jax.registry import Registry
from gl_jax.samplers.ode import FIRST_STEP_FRACTION, adaptive_nfe, probability_flow_drift
from gl_jax.sde import GaussianDiffusion, broadcast_to_data

__all__ = [
    "LikelihoodResult",
    "TRACES",
    "ode_log_likelihood",
    "draw_probes",
    "hutchinson_divergence",
    "exact_divergence",
    "bits_per_dim",
    "uniform_dequantize",
    "diffusion_elbo",
]

PROBES = ("rademacher", "gaussian")


class LikelihoodResult(NamedTuple):
    """What `ode_log_likelihood` returns.

    Attributes:
      logp: log-density of each example under the ODE model, in nats, `[B]`.
      z: the latent, the example carried by the ODE to time `sde.T`, `[B, ...]`.
      nfe: number of evaluations of the augmented ODE (each one score evaluation with its Jacobian-vector
        products), a scalar int array.
    """

    logp: jax.Array
    z: jax.Array
    nfe: jax.Array


# --- Divergences. ---


def draw_probes(
    key: jax.Array, shape: tuple[int, ...], *, probe: str = "rademacher", num_probes: int = 1
) -> jax.Array:
    """Probe vectors for Hutchinson's estimator, `[num_probes, *shape]`, with E[v v^T] = I per example.

    Args:
      key: PRNG key.
      shape: `[B, ...]`, the shape of the data.
      probe: `"rademacher"` (entries +-1) or `"gaussian"` (entries N(0, 1)).
      num_probes: number of independent probes per example.
    """
    if probe not in PROBES:
        raise ValueError(f"Unknown probe {probe!r}; choose one of {PROBES}.")
    full = (num_probes, *shape)
    if probe == "rademacher":
        return jax.random.rademacher(key, full, dtype=jnp.float32)
    return jax.random.normal(key, full)


def _quadratic_forms(
    fn: Callable[[jax.Array], jax.Array], x: jax.Array, probes: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """fn(x) and v^T J v for every probe v, `[P, B]`, J the per-example Jacobian of `fn` at `x`.

    One linearisation, then a forward-mode product per probe: `fn` must treat examples independently, so
    the batch Jacobian is block diagonal and J_batch v holds every example's J_i v_i.
    """
    y, jvp = jax.linearize(fn, x)
    jv = jax.vmap(jvp)(probes)  # [P, B, ...]
    p, b = probes.shape[:2]
    return y, jnp.sum(jnp.reshape(probes * jv, (p, b, -1)), axis=-1)


def hutchinson_divergence(
    fn: Callable[[jax.Array], jax.Array], x: jax.Array, probes: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Hutchinson's estimate of the divergence tr(J) of `fn` at each example (Hutchinson 1989).

    tr(J) ~ 1/P sum_p v_p^T J v_p with E[v v^T] = I. For any J the estimate is unbiased; with one probe its
    variance is 2 (||S||_F^2 - sum_i S_ii^2) for Rademacher and 2 ||S||_F^2 for Gaussian probes, where
    S = (J + J^T) / 2 (v^T J v only sees the symmetric part), so for a symmetric J these are
    2 (||J||_F^2 - sum_i J_ii^2) and 2 ||J||_F^2.

    Args:
      fn: `[B, ...] -> [B, ...]`, acting on each example independently.
      x: `[B, ...]`.
      probes: `[P, B, ...]`, e.g. from `draw_probes`.

    Returns:
      `(fn(x), estimate)`: `fn(x)` shaped like `x`, the estimates `[B]`.
    """
    y, quad = _quadratic_forms(fn, x, probes)
    return y, jnp.mean(quad, axis=0)


def exact_divergence(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The exact divergence tr(J) of `fn` at each example, from D Jacobian-vector products (small D).

    Args:
      fn: `[B, ...] -> [B, ...]`, acting on each example independently.
      x: `[B, ...]` with D = prod(x.shape[1:]).

    Returns:
      `(fn(x), divergence)`: `fn(x)` shaped like `x`, the divergence `[B]`.
    """
    d = math.prod(x.shape[1:])
    # The basis vector e_k for every example at once: J_batch e_k holds column k of each J_i.
    basis = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype).reshape(d, 1, *x.shape[1:]), (d, *x.shape))
    y, quad = _quadratic_forms(fn, x, basis)
    return y, jnp.sum(quad, axis=0)


def _exact(key, shape, *, probe, num_probes):
    del key, shape, probe, num_probes
    return exact_divergence


def _hutchinson(key, shape, *, probe, num_probes):
    probes = draw_probes(key, shape, probe=probe, num_probes=num_probes)
    return lambda fn, x: hutchinson_divergence(fn, x, probes)


# Names a config may use for `config.eval.bpd_trace`: each builds `divergence(fn, x) -> (fn(x), div)`
# from a key and the data's shape (Hutchinson's probes are drawn once, there).
TRACES = Registry("trace", {"exact": _exact, "hutchinson": _hutchinson})


# --- The probability-flow ODE likelihood. ---


def ode_log_likelihood(
    key: jax.Array,
    score_fn: Callable[[jax.Array, jax.Array], jax.Array],
    sde: GaussianDiffusion,
    x: jax.Array,
    *,
    trace: str = "hutchinson",
    probe: str = "rademacher",
    num_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    t_min: float | None = None,
    max_steps: int = 4096,
) -> LikelihoodResult:
    """log p(x) under the probability-flow ODE model, by the instantaneous change of variables.

    For dx/dt = v(x, t) = f(t) x - 1/2 g(t)^2 s(x, t) (Song et al. 2021, eq. 13), d log p_t(x_t)/dt =
    -div v(x_t, t) (Chen et al. 2018, theorem 1), so integrating x and the divergence from t_min to T,

      log p_{t_min}(x) = log p_T(z) + int_{t_min}^T div v(x_t, t) dt,    z = x_T,

    and p_T is replaced by the prior `sde.prior_logp` (Song et al. 2021, appendix D.2, eq. 40). So this is
    the density at time t_min, not t = 0: with the exact score it equals the true marginal log p_{t_min}(x)
    up to the prior mismatch log pi(z) - log p_T(z). The state (x, int div) goes through one
    `diffrax.diffeqsolve`; its error norm covers the whole batch and the accumulated divergence.

    Args:
      key: PRNG key for the Hutchinson probes (unused with `trace="exact"`).
      score_fn: `score_fn(x, t) -> score` with `x` `[B, ...]`, `t` `[B]`.
      sde: the forward process.
      x: data `[B, ...]` (e.g. dequantized, see `uniform_dequantize`).
      trace: `"exact"` (D Jacobian-vector products per evaluation; small D) or `"hutchinson"` (Grathwohl
        et al. 2019: unbiased for log p, since the probes are drawn once per call and held fixed along
        the trajectory, which does not depend on them).
      probe: `"rademacher"` or `"gaussian"`, see `draw_probes`.
      num_probes: Hutchinson probes per example; the estimate averages them.
      rtol, atol: tolerances of the PID step-size controller.
      method: `"dopri5"` or `"tsit5"`.
      t_min: starting time (default `sde.t_min`).
      max_steps: cap on attempted steps (diffrax raises if it is reached).

    Returns:
      `LikelihoodResult(logp [B], z [B, ...], nfe)`, logp in nats; nfe = 6 * num_steps + 1 evaluations of
      the augmented vector field (see `gl_jax.samplers.ode.adaptive_nfe`).

    Raises:
      AssertionError: `score_fn`'s output is not shaped like `x` (a `chex` check, made when traced).
    """
    if method not in ("dopri5", "tsit5"):
        raise ValueError(f"Unknown method {method!r}; choose 'dopri5' or 'tsit5'.")
    divergence = TRACES[trace](key, x.shape, probe=probe, num_probes=num_probes)

    def checked_score(x_t, t):
        score = score_fn(x_t, t)
        # Checked when traced: a score of another shape would broadcast into a wrong drift silently.
        chex.assert_equal_shape([score, x_t], custom_message="score_fn(x, t) must be shaped like x")
        return score

    drift = probability_flow_drift(checked_score, sde)
    t0 = sde.t_min if t_min is None else t_min

    def vector_field(t, state, args):
        x_t, _ = state
        return divergence(lambda y: drift(y, t), x_t)  # (dx/dt [B, ...], d(int div)/dt [B])

    solver = diffrax.Dopri5() if method == "dopri5" else diffrax.Tsit5()
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0=t0,
        t1=sde.T,
        dt0=FIRST_STEP_FRACTION * (sde.T - t0),
        y0=(x, jnp.zeros(x.shape[:1], x.dtype)),
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    z, delta_logp = sol.ys[0][0], sol.ys[1][0]
    return LikelihoodResult(sde.prior_logp(z) + delta_logp, z, adaptive_nfe(sol.stats["num_steps"]))


# --- Discrete data. ---


def bits_per_dim(
    logp: jax.Array, *, num_dims: int, levels: int = 256, offset: float | None = None
) -> jax.Array:
    """Converts a log-density of data scaled to [-1, 1] into bits per dimension of the discrete data.

    With k in {0, ..., levels - 1}^D dequantized as x = 2 (k + u) / levels - 1, u ~ U[0, 1)^D (see
    `uniform_dequantize`), the density of k + u in [0, levels)^D is p(x) (2 / levels)^D, and
    log P(k) >= E_u[log p(x)] + D log(2 / levels) (Theis et al. 2016, sec. 3.1, Jensen's inequality).
    Hence, with the default offset,

      bpd = -logp / (D ln 2) + log2(levels / 2),

    i.e. -log2 of the scaling derivative `|dx/du|` = 2 / levels per dimension: +7 bits for 8-bit data,
    as score_sde's `bpd = -logp / (D ln 2) + 7` (Song et al. 2021, appendix D; written there as 8 bits for
    the [0, 256) -> [0, 1) scaling minus log2 of the [0, 1) -> [-1, 1) Jacobian 2, i.e. 8 - 1).
    A uniform density on [-1, 1]^D (logp = -D ln 2) gives exactly log2(levels) bits/dim.

    Args:
      logp: log-densities in nats, any shape (e.g. `[B]`).
      num_dims: D, the number of data dimensions (e.g. 32 * 32 * 3).
      levels: number of discrete levels per dimension (256 for 8-bit images).
      offset: bits added per dimension; default log2(levels / 2) for data in [-1, 1]. Use log2(levels)
        for data scaled to [0, 1), or 0 for continuous data.

    Returns:
      bits per dimension, shaped like `logp`.

    Raises:
      AssertionError: `num_dims` is not a positive number (a `chex` check).
    """
    chex.assert_scalar_positive(num_dims)
    if offset is None:
        offset = bits_offset(levels)
    return -logp / (num_dims * math.log(2.0)) + offset


def uniform_dequantize(key: jax.Array, x_int: jax.Array, *, levels: int = 256) -> jax.Array:
    """Uniform dequantization x = 2 (k + u) / levels - 1, u ~ U[0, 1) (Theis et al. 2016).

    `gl_jax.pixels.dequantized` with a random offset; `gl_jax.pixels.to_levels` recovers the integers.

    Args:
      key: PRNG key for u.
      x_int: integers in {0, ..., levels - 1}, any shape and integer dtype.
      levels: number of discrete levels.

    Returns:
      float32 array shaped like `x_int`, in [-1, 1).
    """
    return dequantized(x_int, jax.random.uniform(key, x_int.shape, jnp.float32), levels=levels)


# --- The variational bound. ---


def diffusion_elbo(
    key: jax.Array,
    score_fn: Callable[[jax.Array, jax.Array], jax.Array],
    sde: GaussianDiffusion,
    x: jax.Array,
    *,
    num_t: int = 64,
    trace: str = "hutchinson",
    probe: str = "rademacher",
    t_min: float | None = None,
) -> jax.Array:
    """A Monte Carlo estimate of the continuous-time ELBO of the reverse-SDE model, `[B]` nats.

    Song et al. 2021b, theorem 1 (the score-matching form L^SM_theta; Huang et al. 2021, theorem 3): for
    the model that runs dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dw_bar from pi at T down to s = t_min,

      log p^SDE_s(y) >= E[log pi(x_T)] - 1/2 int_s^T E[g(t)^2 (||s(x_t, t)||^2 + 2 div s(x_t, t))
                                                      - 2 div f(x_t, t)] dt,

    with x_t ~ q(x_t | x_s = y) = N(r_t y, sigma_{s,t}^2 I), r_t = alpha(t) / alpha(s),
    sigma_{s,t}^2 = sigma(t)^2 - r_t^2 sigma(s)^2 = sigma(t)^2 (1 - exp(lambda_t - lambda_s)) (computed with
    expm1), and div f = D f(t). The bound is on the density at t_min (the quantity `ode_log_likelihood`
    computes), by applying the theorem to the forward process started at t_min. Its gap is the KL
    divergence between the forward and model path measures given x_s = y, so it is zero (up to the prior
    mismatch) whenever `score_fn` is the exact score of some diffused distribution.

    Estimator: E[log pi(x_T)] is closed-form for the Gaussian prior N(0, p^2 I):
    -D/2 log(2 pi p^2) - (||r_T y||^2 + D sigma_{s,T}^2) / (2 p^2). The time integral is (T - s) times the
    mean of the integrand over `num_t` stratified times per example (t_j uniform in the j-th of `num_t`
    equal sub-intervals, unbiased), each with one x_t draw. We use the implicit form ||s||^2 + 2 div s
    rather than the denoising form ||s - grad log q||^2 - ||grad log q||^2 because its variance is finite:
    the denoising form has a term ~ s . eps / sigma_{s,t} whose variance ~ 1 / (t - s) is not integrable
    at t = s. The divergence is exact or Hutchinson's (unbiased, so the estimate stays unbiased).

    Args:
      key: PRNG key for the times, the x_t draws and the probes.
      score_fn: `score_fn(x, t) -> score` with `x` `[B, ...]`, `t` `[B]`.
      sde: the forward process.
      x: data `[B, ...]`.
      num_t: time samples per example; the score is evaluated on a batch of `num_t * B`.
      trace: `"exact"` or `"hutchinson"` divergence, see `ode_log_likelihood`.
      probe: `"rademacher"` or `"gaussian"` (one probe per time sample).
      t_min: s (default `sde.t_min`).

    Returns:
      `[B]` unbiased estimates of the lower bound on log p^SDE_{t_min}(x), in nats.
    """
    s = sde.t_min if t_min is None else t_min
    b, d = x.shape[0], math.prod(x.shape[1:])
    key_t, key_eps, key_probe = jax.random.split(key, 3)

    # Stratified times [num_t, B]: the j-th lies in the j-th of num_t equal sub-intervals of [s, T].
    u = (jnp.arange(num_t)[:, None] + jax.random.uniform(key_t, (num_t, b))) / num_t
    t = (s + (sde.T - s) * u).reshape(-1)  # [num_t * B]

    def kernel(t):
        """Scale r_t and std sigma_{s,t} of q(x_t | x_s), `[len(t)]` each."""
        r = sde.alpha(t) / sde.alpha(jnp.full_like(t, s))
        var = sde.sigma(t) ** 2 * -jnp.expm1(sde.log_snr(t) - sde.log_snr(jnp.full_like(t, s)))
        return r, jnp.sqrt(jnp.maximum(var, 0.0))

    y = jnp.broadcast_to(x[None], (num_t, *x.shape)).reshape(num_t * b, *x.shape[1:])  # [num_t * B, ...]
    r, std = kernel(t)
    x_t = broadcast_to_data(r, y) * y + broadcast_to_data(std, y) * jax.random.normal(key_eps, y.shape)

    divergence = TRACES[trace](key_probe, y.shape, probe=probe, num_probes=1)
    score, div_score = divergence(lambda v: score_fn(v, t), x_t)
    sq_norm = jnp.sum(jnp.reshape(score, (num_t * b, -1)) ** 2, axis=-1)
    integrand = sde.g2(t) * (sq_norm + 2.0 * div_score) - 2.0 * d * sde.f(t)  # [num_t * B]
    integral = (sde.T - s) * jnp.mean(integrand.reshape(num_t, b), axis=0)  # [B]

    r_T, std_T = kernel(jnp.full((b,), sde.T))
    p2 = sde.prior_std() ** 2
    mean_sq = jnp.sum(jnp.reshape(x, (b, -1)) ** 2, axis=-1) * r_T**2
    prior_term = -0.5 * d * jnp.log(2.0 * jnp.pi * p2) - 0.5 * (mean_sq + d * std_T**2) / p2
    return prior_term - 0.5 * integral
