"""Consistency models' objectives: distillation (CD), training (CT) and improved training (iCT), and their
noise-level schedules; progressive distillation's target.

Consistency models (Song et al. 2023, "Consistency models", ICML) work on the variance-exploding process
x_sigma = x_0 + sigma z with sigma in [sigma_min, sigma_max] (EDM's, Karras et al. 2022). The discretisation
has N levels sigma_1 < ... < sigma_N, EDM's (Song et al. 2023, sec. 5 / appendix C):

  sigma_i = (sigma_min^(1/rho) + (i - 1) / (N - 1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho.

A loss pairs an adjacent (sigma_n, sigma_{n+1}): the online network at the noisier point, the target
network at the cleaner one, which is one teacher ODE step (Heun, CD, Algorithm 2) or the same noise at the
lower level (CT, Algorithm 3): d(f_theta(x_{n+1}, sigma_{n+1}), f_theta-(x_n, sigma_n)).

Improved consistency training (Song & Dhariwal 2024, "Improved techniques for training consistency
models", ICLR) changes: the target is the online network itself under stop-gradient (no EMA), the distance
is pseudo-Huber with c = 0.00054 sqrt(d), the level n is drawn with probability proportional to the
log-normal mass of [sigma_n, sigma_{n+1}] (P_mean = -1.1, P_std = 2.0), each pair is weighted by
1 / (sigma_{n+1} - sigma_n), and N doubles from s0 = 10 to s1 = 1280 over training (sec. 3.4, eq. 8).

The number of levels changes during training, so the functions here take N as a (possibly traced)
scalar and compute levels on demand rather than as arrays of a fixed shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from gl_jax.sde import broadcast_to_data

__all__ = [
    "DenoiserFn",
    "boundary_skip",
    "consistency_function",
    "karras_level",
    "ct_num_levels",
    "ct_target_decay",
    "ict_num_levels",
    "ict_level_probabilities",
    "pseudo_huber",
    "heun_step",
    "consistency_loss",
    "progressive_target",
]

# A denoiser (or consistency function) in sigma space: `fn(x [B, ...], sigma [B]) -> [B, ...]`.
DenoiserFn = Callable[[jax.Array, jax.Array], jax.Array]


def boundary_skip(sigma: jax.Array, *, sigma_min: float, sigma_data: float) -> jax.Array:
    """c_skip(sigma) = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2) (Song et al. 2023, eq. in
    appendix C): 1 exactly at sigma_min, towards 0 at high noise."""
    return sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)


def consistency_function(denoiser: DenoiserFn, *, sigma_min: float, sigma_data: float = 0.5) -> DenoiserFn:
    """f(x, sigma) = c_skip(sigma) x + (1 - c_skip(sigma)) D(x, sigma), from a denoiser D.

    The boundary condition f(x, sigma_min) = x holds exactly: c_skip(sigma_min) = 1 and the denoiser's term
    is multiplied by exactly 0. Song et al. write f = c_skip x + c_out F with the raw network F and
    c_out = sigma_data (sigma - sigma_min) / sqrt(sigma^2 + sigma_data^2); here the network is a whole
    denoiser D (in its own parametrisation, e.g. the teacher's, which the student starts from), so its
    weight is 1 - c_skip: the same boundary condition, and at high noise f -> D, the teacher's one-step
    estimate at initialisation.

    Args:
      denoiser: `D(x, sigma)` in sigma space.
      sigma_min: the boundary's noise level (0.002).
      sigma_data: the data's standard deviation (0.5).
    """

    def f(x: jax.Array, sigma: jax.Array) -> jax.Array:
        c_skip = broadcast_to_data(boundary_skip(sigma, sigma_min=sigma_min, sigma_data=sigma_data), x)
        return c_skip * x + (1.0 - c_skip) * denoiser(x, sigma)

    return f


def karras_level(i: jax.Array, num: jax.Array, *, sigma_min: float, sigma_max: float, rho: float = 7.0):
    """sigma_(i+1) of N = `num` levels (0-based `i`; 0 gives sigma_min, N - 1 gives sigma_max)."""
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    frac = jnp.asarray(i, jnp.float32) / (jnp.asarray(num, jnp.float32) - 1.0)
    return (lo + frac * (hi - lo)) ** rho


def ct_num_levels(k: jax.Array, *, total_steps: int, s0: int = 2, s1: int = 150) -> jax.Array:
    """CT's N(k) = ceil(sqrt(k / K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1 (Song et al. 2023, appendix C)."""
    k = jnp.asarray(k, jnp.float32)
    return jnp.ceil(jnp.sqrt(k / total_steps * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1.0).astype(jnp.int32) + 1


def ct_target_decay(num_levels: jax.Array, *, mu0: float = 0.9, s0: int = 2) -> jax.Array:
    """CT's target EMA decay mu(k) = exp(s0 log mu0 / N(k)) (Song et al. 2023, appendix C)."""
    return jnp.exp(s0 * math.log(mu0) / jnp.asarray(num_levels, jnp.float32))


def ict_num_levels(k: jax.Array, *, total_steps: int, s0: int = 10, s1: int = 1280) -> jax.Array:
    """iCT's N(k) = min(s0 2^floor(k / K'), s1) + 1, K' = floor(K / (log2 floor(s1 / s0) + 1))
    (Song & Dhariwal 2024, eq. 8)."""
    stages = int(math.log2(s1 // s0)) + 1
    # Capped, so 2^doublings cannot overflow long after the last stage.
    doublings = jnp.minimum(jnp.asarray(k, jnp.int32) // max(total_steps // stages, 1), stages)
    return jnp.minimum(s0 * 2**doublings, s1) + 1


def ict_level_probabilities(
    num: jax.Array,
    *,
    max_levels: int,
    sigma_min: float,
    sigma_max: float,
    rho: float = 7.0,
    p_mean: float = -1.1,
    p_std: float = 2.0,
) -> jax.Array:
    """p(n) for n = 0 .. max_levels - 2, proportional to erf((ln sigma_{n+1} - P_mean) / (sqrt2 P_std)) -
    erf((ln sigma_n - P_mean) / (sqrt2 P_std)) for n < N - 1 and 0 beyond (Song & Dhariwal 2024, sec. 3.5).

    Returns:
      `[max_levels - 1]` probabilities summing to 1.
    """
    n = jnp.arange(max_levels - 1)
    cdf = lambda s: jax.scipy.special.erf((jnp.log(s) - p_mean) / (math.sqrt(2.0) * p_std))
    level = lambda i: karras_level(i, num, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    mass = jnp.where(n < num - 1, cdf(level(n + 1)) - cdf(level(n)), 0.0)
    return mass / jnp.sum(mass)


def pseudo_huber(a: jax.Array, b: jax.Array, c: float) -> jax.Array:
    """sqrt(||a - b||^2 + c^2) - c per example `[B]` (Song & Dhariwal 2024, sec. 3.3)."""
    sq = jnp.sum(jnp.square(a - b).reshape(a.shape[0], -1), axis=-1)
    return jnp.sqrt(sq + c**2) - c


def heun_step(denoiser: DenoiserFn, x: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """One Heun step of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma from `sigma` down to
    `sigma_next` > 0 (Karras et al. 2022, Algorithm 1; CD's teacher step). `sigma`, `sigma_next`: `[B]`."""
    s, s_next = broadcast_to_data(sigma, x), broadcast_to_data(sigma_next, x)
    d1 = (x - denoiser(x, sigma)) / s
    x_euler = x + (s_next - s) * d1
    d2 = (x_euler - denoiser(x_euler, sigma_next)) / s_next
    return x + (s_next - s) * 0.5 * (d1 + d2)


def consistency_loss(
    keys: jax.Array,
    online: DenoiserFn,
    target: DenoiserFn,
    x0: jax.Array,
    *,
    num_levels: jax.Array,
    sigma_min: float,
    sigma_max: float,
    rho: float = 7.0,
    teacher: DenoiserFn | None = None,
    distance: str = "l2",
    huber_c: float | None = None,
    level_sampling: str = "uniform",
    max_levels: int = 0,
    p_mean: float = -1.1,
    p_std: float = 2.0,
    weighting: str = "uniform",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The consistency loss of a batch: CD with a `teacher`, CT without (Song et al. 2023, Alg. 2 and 3).

    Per example: n from `level_sampling`, z ~ N(0, I), x_{n+1} = x_0 + sigma_{n+1} z; x_n is one Heun step
    of the teacher from x_{n+1} (CD) or x_0 + sigma_n z (CT); the term is
    lambda(n) d(online(x_{n+1}, sigma_{n+1}), stop_gradient(target(x_n, sigma_n))).

    Args:
      keys: `[B]` per-example PRNG keys.
      online: f_theta(x, sigma), the consistency function being trained.
      target: f_theta- (an EMA copy, or `online` itself for iCT); its output is not differentiated.
      x0: data `[B, ...]`.
      num_levels: N, a (traced) integer scalar.
      sigma_min, sigma_max, rho: the levels' range and EDM's exponent.
      teacher: D(x, sigma) of the teacher (CD), or None (CT).
      distance: "l2" (squared L2, mean over dimensions as `denoising_score_matching`'s reduce="mean") or
        "pseudo_huber".
      huber_c: pseudo-Huber's c; None: 0.00054 sqrt(d) (iCT).
      level_sampling: "uniform" over n = 0 .. N - 2 (CM) or "lognormal" (iCT, needs `max_levels`).
      max_levels: an upper bound of N (the lognormal probabilities' static length).
      p_mean, p_std: the log-normal's parameters.
      weighting: "uniform" (lambda = 1, CM) or "ict" (1 / (sigma_{n+1} - sigma_n)).

    Returns:
      `(loss, metrics)`: the batch mean and `{"loss", "num_levels"}`.
    """
    chex.assert_rank(keys, 1)
    dim = math.prod(x0.shape[1:])
    level = lambda i: karras_level(i, num_levels, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)

    def draw(key):
        key_n, key_z = jax.random.split(key)
        if level_sampling == "uniform":
            n = jax.random.randint(key_n, (), 0, num_levels - 1)
        elif level_sampling == "lognormal":
            if max_levels < 2:
                raise ValueError("level_sampling='lognormal' needs max_levels >= 2 (an upper bound of N).")
            probs = ict_level_probabilities(
                num_levels,
                max_levels=max_levels,
                sigma_min=sigma_min,
                sigma_max=sigma_max,
                rho=rho,
                p_mean=p_mean,
                p_std=p_std,
            )
            n = jax.random.choice(key_n, max_levels - 1, p=probs)
        else:
            raise ValueError(f"Unknown level_sampling {level_sampling!r}; choose 'uniform' or 'lognormal'.")
        return n, jax.random.normal(key_z, x0.shape[1:], x0.dtype)

    n, z = jax.vmap(draw)(keys)  # [B], [B, ...]
    s_lo, s_hi = level(n), level(n + 1)  # [B] each
    x_hi = x0 + broadcast_to_data(s_hi, x0) * z
    if teacher is None:
        x_lo = x0 + broadcast_to_data(s_lo, x0) * z
    else:
        x_lo = jax.lax.stop_gradient(heun_step(teacher, x_hi, s_hi, s_lo))
    pred = online(x_hi, s_hi)
    goal = jax.lax.stop_gradient(target(x_lo, s_lo))
    if distance == "l2":
        d = jnp.mean(jnp.square(pred - goal).reshape(x0.shape[0], -1), axis=-1)
    elif distance == "pseudo_huber":
        d = pseudo_huber(pred, goal, 0.00054 * math.sqrt(dim) if huber_c is None else huber_c)
    else:
        raise ValueError(f"Unknown distance {distance!r}; choose 'l2' or 'pseudo_huber'.")
    if weighting == "ict":
        d = d / (s_hi - s_lo)
    elif weighting != "uniform":
        raise ValueError(f"Unknown weighting {weighting!r}; choose 'uniform' or 'ict'.")
    loss = jnp.mean(d)
    return loss, {"loss": loss, "num_levels": jnp.asarray(num_levels, jnp.float32)}


def progressive_target(
    teacher_x0: Callable[[jax.Array, jax.Array], jax.Array],
    z_t: jax.Array,
    alphas: tuple[jax.Array, jax.Array, jax.Array],
    sigmas: tuple[jax.Array, jax.Array, jax.Array],
    times: tuple[jax.Array, jax.Array],
) -> jax.Array:
    """Progressive distillation's target x~ (Salimans & Ho 2022, Algorithm 2).

    Two deterministic DDIM steps of the teacher, t -> t' -> t'', and the x~ for which one DDIM step of the
    student from z_t lands on the same z_t'':

      z_t' = alpha_t' x^(z_t) + (sigma_t' / sigma_t) (z_t - alpha_t x^(z_t)), likewise z_t'' from z_t';
      x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t).

    Args:
      teacher_x0: `x0_hat(z [B, ...], t [B])`, the teacher's denoised estimate.
      z_t: `[B, ...]` the noised data at t.
      alphas, sigmas: `(at t, at t', at t'')`, each `[B]`.
      times: `(t, t')`, each `[B]` (the teacher's evaluation times).

    Returns:
      `[B, ...]` the student's x0 target.
    """
    (a, a1, a2), (s, s1, s2) = (
        [broadcast_to_data(v, z_t) for v in alphas],
        [broadcast_to_data(v, z_t) for v in sigmas],
    )
    t, t1 = times
    x_hat = teacher_x0(z_t, t)
    z1 = a1 * x_hat + (s1 / s) * (z_t - a * x_hat)
    x_hat1 = teacher_x0(z1, t1)
    z2 = a2 * x_hat1 + (s2 / s1) * (z1 - a1 * x_hat1)
    return (z2 - (s2 / s) * z_t) / (a2 - (s2 / s) * a)
