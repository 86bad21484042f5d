"""Couplings of data and noise for denoising and flow-matching losses: independent or minibatch OT.

Minibatch optimal transport (Tong et al. 2023, "Improving and generalizing flow-based generative models
with minibatch optimal transport", OT-CFM, sec. 3.2 and alg. 2; Pooladian et al. 2023, "Multisample flow
matching") pairs each batch's data x_0^i with the noise eps^pi(i) of the permutation pi minimising
sum_i || x_0^i - eps^pi(i) ||^2, the exact OT plan between the two empirical measures (Birkhoff: an
assignment is optimal among all couplings of two uniform n-point measures). Rectified-flow paths between
the re-paired points cross less, so the learned velocity field is straighter and few-step ODE samples are
better.

Why an exact assignment solved on device, not Sinkhorn. Entropic OT (ott-jax's Sinkhorn) gives a dense
plan, not a permutation: drawing pairs from it repeats and drops noise vectors and blurs the coupling by
the entropy. ott-jax would also bring jaxopt and lineax as new dependencies. scipy's
`linear_sum_assignment` is exact but runs on the host (`method="scipy"`, kept as the reference and for big
batches). For the batches of flow-matching training (<= 256) the auction algorithm (Bertsekas 1988, "The
auction algorithm: a distributed relaxation method for the assignment problem"; Bertsekas & Castanon 1989,
Jacobi bidding with epsilon-scaling) is a few lines of `lax.while_loop` on `[n, n]` arrays: jit-able,
vmap-able, and optimal to within n * eps of the optimum's cost (eps-complementary slackness; Bertsekas
1988), with eps a relative 1e-6 of the cost range by default.

Only the cross term -<x_0^i, eps^j> of || x_0^i - eps^j ||^2 depends on the permutation, so the pairing is
the same for s * eps with any s > 0: the OT pairing for x_T = alpha(T) x_0 + sigma(T) eps is this one for
every process.
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from gl_jax.registry import Registry

__all__ = ["ot_pairing", "assignment", "IndependentCoupling", "OTCoupling", "COUPLINGS"]

_METHODS = ("auction", "scipy")


def _auction(benefit: jax.Array, *, eps_final: float, max_iters: int) -> jax.Array:
    """The assignment maximising sum_i benefit[i, pi(i)] for `benefit` `[n, n]` in [0, 1]: pi `[n]`.

    Jacobi auction with eps-scaling: every unassigned person i bids for its best object j* the price
    p_j* + (v1 - v2) + eps (v1, v2 its best and second-best values benefit - p), each object goes to its
    highest bidder, prices rise; the phases run eps = 1/4, 1/20, ... down to `eps_final`, keeping the prices
    (Bertsekas & Castanon 1989).
    """
    n = benefit.shape[0]
    ratio = 5.0
    num_phases = max(1, math.ceil(math.log(0.25 / eps_final) / math.log(ratio)) + 1)
    epsilons = jnp.maximum(0.25 / ratio ** jnp.arange(num_phases), eps_final).astype(benefit.dtype)
    people = jnp.arange(n)
    objects = jnp.arange(n)[None, :]  # [1, n]
    none = jnp.full((n,), -1, jnp.int32)

    def bid(state):
        prices, owned, owner, it, eps = state  # [n] prices, person -> object, object -> person; scalars
        unassigned = owned < 0
        values = benefit - prices  # [n, n]
        choice = jnp.argmax(values, axis=1)  # [n]
        first = jnp.max(values, axis=1)  # [n]
        second = jnp.max(jnp.where(objects == choice[:, None], -jnp.inf, values), axis=1)  # [n]
        offer = jnp.where(unassigned, prices[choice] + first - second + eps, -jnp.inf)  # [n]
        # Dense [person, object] offers: XLA's CPU scatters inside a while loop cost milliseconds each.
        offers = jnp.where(objects == choice[:, None], offer[:, None], -jnp.inf)  # [n, n]
        highest = jnp.max(offers, axis=0)  # [n] per object
        sold = highest > -jnp.inf
        winner = jnp.argmax(offers, axis=0)  # [n]; among equal offers the lowest index wins.
        won = unassigned & (winner[choice] == people) & sold[choice]
        # An object's previous owner (an assigned person, never a bidder) loses it when it is sold.
        lost = ~unassigned & sold[jnp.maximum(owned, 0)]
        owned = jnp.where(won, choice, jnp.where(lost, -1, owned)).astype(jnp.int32)
        owner = jnp.where(sold, winner, owner).astype(jnp.int32)
        prices = jnp.where(sold, highest, prices)
        return prices, owned, owner, it + 1, eps

    def unfinished(state):
        _, owned, _, it, _ = state
        return jnp.any(owned < 0) & (it < max_iters)

    def phase(k, carry):
        prices, _, _, it = carry
        # Prices matter only up to a constant: keeping their minimum at 0 keeps eps above their rounding.
        prices = prices - jnp.min(prices)
        state = jax.lax.while_loop(unfinished, bid, (prices, none, none, it, epsilons[k]))
        return state[:4]

    zeros = jnp.zeros((n,), benefit.dtype)
    _, owned, owner, _ = jax.lax.fori_loop(0, num_phases, phase, (zeros, none, none, jnp.int32(0)))
    # Past `max_iters` (not reached in practice) the unassigned people take the free objects in order, so
    # the result is always a permutation.
    free_people = owned < 0
    free_objects = jnp.argsort(owner >= 0, stable=True)  # Unowned objects first.
    rank = jnp.cumsum(free_people) - 1
    return jnp.where(free_people, free_objects[jnp.clip(rank, 0, n - 1)], owned)


def _scipy_assignment(cost: jax.Array) -> jax.Array:
    def solve(c):
        c = np.asarray(c)
        batch = c.shape[:-2]
        flat = c.reshape(-1, *c.shape[-2:])
        cols = [optimize.linear_sum_assignment(m)[1] for m in flat]
        return np.asarray(cols, np.int32).reshape(*batch, c.shape[-1])

    out = jax.ShapeDtypeStruct(cost.shape[:-1], jnp.int32)
    return jax.pure_callback(solve, out, cost, vmap_method="expand_dims")


def assignment(
    cost: jax.Array, *, method: str = "auction", eps: float = 1e-6, max_iters: int = 100_000
) -> jax.Array:
    """The permutation pi minimising sum_i cost[i, pi(i)] for a square `cost` `[n, n]`: pi `[n]` (int32).

    Args:
      cost: the cost matrix `[n, n]`.
      method: "auction" (on device, optimal to within n * eps * (cost range)) or "scipy" (scipy's exact
        `linear_sum_assignment` on the host through `jax.pure_callback`).
      eps: the auction's final eps, relative to the range of the row-reduced cost.
      max_iters: a cap on the auction's bidding rounds over all phases.

    Returns:
      pi `[n]`, a permutation of 0..n-1.
    """
    if method not in _METHODS:
        raise ValueError(f"Unknown assignment method {method!r}; choose one of {list(_METHODS)}.")
    chex.assert_rank(cost, 2)
    chex.assert_equal(cost.shape[0], cost.shape[1])
    n = cost.shape[0]
    if n == 1:
        return jnp.zeros((1,), jnp.int32)
    if method == "scipy":
        return _scipy_assignment(cost)
    # Subtracting a row's minimum changes every assignment's cost by the same amount; scale to [0, 1] so
    # eps is relative and the first phase's eps = 1/4 is coarse.
    reduced = cost - jnp.min(cost, axis=1, keepdims=True)  # [n, n]
    scale = jnp.maximum(jnp.max(reduced), jnp.finfo(cost.dtype).tiny)
    return _auction(1.0 - reduced / scale, eps_final=eps, max_iters=max_iters)


def ot_pairing(x0: jax.Array, noise: jax.Array, *, method: str = "auction", eps: float = 1e-6) -> jax.Array:
    """`noise` re-ordered to the minibatch OT pairing with `x0` (Tong et al. 2023, alg. 2).

    Args:
      x0: data `[B, ...]`.
      noise: noise `[B, ...]` shaped like `x0`.
      method: the assignment solver, "auction" (on device) or "scipy" (host); see `assignment`.
      eps: the auction's relative accuracy.

    Returns:
      `noise[pi]` `[B, ...]`, with pi minimising sum_i || x0[i] - noise[pi(i)] ||^2.
    """
    chex.assert_equal_shape([x0, noise])
    b = x0.shape[0]
    x = jnp.reshape(x0, (b, -1)).astype(jnp.float32)  # [B, D]
    z = jnp.reshape(noise, (b, -1)).astype(jnp.float32)  # [B, D]
    # || x_i - z_j ||^2 = || x_i ||^2 + || z_j ||^2 - 2 <x_i, z_j>: only the cross term depends on pi.
    cost = -(x @ z.T)  # [B, B]
    perm = assignment(jax.lax.stop_gradient(cost), method=method, eps=eps)
    return noise[perm]


@dataclasses.dataclass(frozen=True)
class IndependentCoupling:
    """x_0 and eps drawn independently (the usual denoising and flow-matching losses)."""

    def __call__(self, x0: jax.Array, noise: jax.Array) -> jax.Array:
        del x0
        return noise


@dataclasses.dataclass(frozen=True)
class OTCoupling:
    """Minibatch OT coupling (Tong et al. 2023, OT-CFM): each batch's noise re-paired by `ot_pairing`.

    The pairing spans the whole batch, so a loss with it depends on how the batch is split (under `jit` on
    a mesh the batch is one global assignment).

    Attributes:
      method: "auction" (on device) or "scipy" (host).
      eps: the auction's relative accuracy.
    """

    method: str = "auction"
    eps: float = 1e-6

    def __post_init__(self):
        if self.method not in _METHODS:
            raise ValueError(f"Unknown OT method {self.method!r}; choose one of {list(_METHODS)}.")

    def __call__(self, x0: jax.Array, noise: jax.Array) -> jax.Array:
        return ot_pairing(x0, noise, method=self.method, eps=self.eps)


Coupling = IndependentCoupling | OTCoupling

# Names a config may use for `config.loss.coupling`.
COUPLINGS = Registry("coupling", {"independent": IndependentCoupling, "ot": OTCoupling})
