"""Minibatch OT couplings (Tong et al. 2023): the on-device auction against scipy and brute force."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from gl_jax.losses.coupling import COUPLINGS, OTCoupling, assignment, ot_pairing
from gl_jax.losses.score import denoising_score_matching
from gl_jax.sde import RectifiedFlow


def _cost(cost, perm):
    return float(np.sum(np.asarray(cost)[np.arange(len(perm)), np.asarray(perm)]))


def test_auction_matches_brute_force_on_small_problems():
    for seed in range(5):
        cost = np.random.default_rng(seed).uniform(size=(6, 6)).astype(np.float32)
        best = min(_cost(cost, p) for p in itertools.permutations(range(6)))
        perm = jax.jit(assignment)(jnp.asarray(cost))
        assert sorted(np.asarray(perm).tolist()) == list(range(6))
        assert _cost(cost, perm) == pytest.approx(best, abs=6 * 1e-6 + 1e-6)


@pytest.mark.parametrize("n", [16, 64, 256])
def test_auction_is_optimal_to_its_stated_accuracy_against_scipy(n):
    # eps-complementary slackness: within n * eps * (cost range) of the optimum (Bertsekas 1988).
    x, z = (np.random.default_rng(n + i).standard_normal((n, 8)).astype(np.float32) for i in range(2))
    cost = -(x @ z.T)
    rows, cols = optimize.linear_sum_assignment(cost)
    optimum = float(cost[rows, cols].sum())
    perm = np.asarray(jax.jit(assignment)(jnp.asarray(cost)))
    assert len(set(perm.tolist())) == n
    spread = float(np.max(cost - cost.min(axis=1, keepdims=True)))
    assert _cost(cost, perm) - optimum <= n * 1e-6 * spread + 1e-4 * abs(optimum)
    np.testing.assert_array_equal(np.asarray(assignment(jnp.asarray(cost), method="scipy")), cols)


def test_pairing_vmaps_and_shortens_the_paths():
    x0 = jax.random.normal(jax.random.key(0), (4, 32, 2)) + jnp.array([3.0, 0.0])
    noise = jax.random.normal(jax.random.key(1), (4, 32, 2))
    paired = jax.jit(jax.vmap(ot_pairing))(x0, noise)  # [4, 32, 2]
    for b in range(4):
        # The same points, re-ordered.
        np.testing.assert_array_equal(
            np.sort(np.asarray(paired[b]), axis=0), np.sort(np.asarray(noise[b]), axis=0)
        )
        d_ot = float(jnp.sum((x0[b] - paired[b]) ** 2))
        d_iid = float(jnp.sum((x0[b] - noise[b]) ** 2))
        assert d_ot < 0.8 * d_iid
        cost = np.asarray(jnp.sum((x0[b][:, None] - noise[b][None]) ** 2, -1), np.float64)
        rows, cols = optimize.linear_sum_assignment(cost)
        assert d_ot == pytest.approx(cost[rows, cols].sum(), rel=1e-4)


def test_ot_coupled_loss_is_the_loss_on_the_repaired_noise():
    sde = RectifiedFlow()
    x0 = jax.random.normal(jax.random.key(2), (8, 3)) + 2.0
    model = lambda x_t, t: 0.3 * x_t  # Any eps network.
    key = jax.random.key(3)
    ot_loss, _ = jax.jit(
        lambda k: denoising_score_matching(k, model, sde, x0, prediction="eps", coupling=OTCoupling())
    )(key)
    # By hand: each example's t and eps from its own key, then the noise re-paired over the batch.
    keys = jax.random.split(key, 8)
    t = jnp.stack(
        [jax.random.uniform(jax.random.split(k)[0], (), minval=sde.t_min, maxval=sde.T) for k in keys]
    )
    eps = jnp.stack([jax.random.normal(jax.random.split(k)[1], (3,)) for k in keys])
    cost = np.asarray(-(x0 @ eps.T), np.float64)
    eps = eps[optimize.linear_sum_assignment(cost)[1]]
    x_t = sde.alpha(t)[:, None] * x0 + sde.sigma(t)[:, None] * eps
    by_hand = jnp.mean(jnp.mean((model(x_t, t) - eps) ** 2, axis=-1))
    np.testing.assert_allclose(ot_loss, by_hand, rtol=1e-5)
    plain, _ = denoising_score_matching(key, model, sde, x0, prediction="eps")
    assert abs(float(plain) - float(ot_loss)) > 1e-4  # The coupling changed the pairs.


def test_config_names_and_bad_method():
    assert isinstance(COUPLINGS["ot"](), OTCoupling)
    with pytest.raises(ValueError, match="Unknown OT method"):
        OTCoupling(method="sinkhorn")


def test_the_score_family_takes_the_coupling_from_its_config():
    from gl_jax.families import build_family
    from gl_jax.spec import DataSpec
    from tests.conftest import load_config

    config = load_config("toy_vp", "smoke")
    spec = DataSpec("toy", "vector", (2,), None, None, {})
    assert build_family(config, spec).coupling == COUPLINGS["independent"]()
    config.loss.coupling = "ot"
    family = build_family(config, spec)
    assert family.coupling == OTCoupling()
    params = family.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 2))
    keys = jax.random.split(jax.random.key(2), 16)
    loss, _ = jax.jit(family.loss)(params, {"x": x}, keys)

    def direct(params, x, keys):
        dropout_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        model_fn = lambda x_t, t: family.predict(params, x_t, t, None, keys=dropout_keys)
        return denoising_score_matching(
            keys,
            model_fn,
            family.sde,
            x,
            weighting=family.weighting,
            prediction=family.prediction,
            time_sampling=family.time_sampling,
            coupling=OTCoupling(),
        )[0]

    direct = jax.jit(direct)(params, x, keys)
    np.testing.assert_allclose(loss, direct, rtol=1e-6)
    config.loss.coupling = "sinkhorn"
    with pytest.raises(ValueError, match="config.loss.coupling"):
        build_family(config, spec)
