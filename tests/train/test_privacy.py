"""Differentially private training: clipped per-example gradients, the noise's scale, epsilon against
dp_accounting's own, Poisson batches, the budget stop, and a private run's logs."""

import dataclasses
import json
import re

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import stats

from gl_jax.data.pipeline import make_poisson_dataset
from gl_jax.spec import DataSpec
from gl_jax.train import TrainState, make_train_step
from gl_jax.train import privacy as dp
from gl_jax.train.loop import train_and_evaluate
from gl_jax.train.validation import ConfigError, check_config
from tests.conftest import load_config

D, H = 3, 16  # Input and hidden width of the test network.


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"w1": jax.random.normal(k1, (D, H)), "b1": jnp.zeros(H), "w2": jax.random.normal(k2, (H, 2)) / 4}


def _loss(params, batch, keys):
    """A mean over independent examples, with per-example noise from the keys (like a diffusion loss)."""
    noise = jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys)  # [B, 2]
    pred = jnp.tanh(batch["x"] @ params["w1"] + params["b1"]) @ params["w2"]  # [B, 2]
    per_example = jnp.sum((pred - batch["y"] - 0.3 * noise) ** 2, axis=-1)  # [B]
    return jnp.mean(per_example), {"abs_pred": jnp.mean(jnp.abs(pred))}


def _batch(m=8, seed=1):
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.05, 20.0, m)[:, None]  # Per-example gradient norms on both sides of C.
    return {
        "x": jnp.asarray(rng.normal(size=(m, D)) * scale, jnp.float32),
        "y": jnp.asarray(rng.normal(size=(m, 2)) * scale, jnp.float32),
    }


def _norms64(tree) -> np.ndarray:
    """Per-example norms `[M]` of a tree of `[M, ...]` leaves, in float64."""
    leaves = [np.asarray(g, np.float64).reshape(g.shape[0], -1) for g in jax.tree.leaves(tree)]
    return np.sqrt(sum(np.sum(g**2, axis=1) for g in leaves))


def test_per_example_gradients_are_each_examples_own_and_average_k_draws():
    params, batch = _params(), _batch()
    keys = jax.random.split(jax.random.key(2), 8)
    losses, metrics, grads = dp.per_example_grads(_loss, params, batch, keys)
    for i in (0, 5):  # An independent computation: the gradient of example i's loss alone.
        one = {k: v[i : i + 1] for k, v in batch.items()}
        (loss_i, _), grad_i = jax.value_and_grad(_loss, has_aux=True)(params, one, keys[i : i + 1])
        np.testing.assert_allclose(losses[i], loss_i, rtol=1e-6)
        for g, gi in zip(jax.tree.leaves(grads), jax.tree.leaves(grad_i), strict=True):
            np.testing.assert_allclose(g[i], gi, rtol=1e-5, atol=1e-7)
    assert metrics["abs_pred"].shape == (8,)
    # K = 4: example i's loss is the mean over 4 draws with the keys split from its own.
    losses4, _, _ = dp.per_example_grads(_loss, params, batch, keys, multiplicity=4)
    draws = jax.random.split(keys[3], 4)
    copies = jax.tree.map(lambda a: jnp.repeat(a[3:4], 4, axis=0), batch)
    np.testing.assert_allclose(losses4[3], _loss(params, copies, draws)[0], rtol=1e-6)
    assert not np.allclose(losses4, losses)


@pytest.mark.parametrize("clip_norm", [0.1, 1.0, 7.0])
def test_clipped_per_example_gradient_norms_are_at_most_c(clip_norm):
    params, batch = _params(), _batch(32)
    keys = jax.random.split(jax.random.key(3), 32)
    _, _, grads = dp.per_example_grads(_loss, params, batch, keys, multiplicity=2)
    norms = jax.vmap(optax.global_norm)(grads)
    scale = dp.clip_scale(norms, clip_norm)
    clipped = jax.tree.map(lambda g: g * scale.reshape((-1,) + (1,) * (g.ndim - 1)), grads)
    before, after = _norms64(grads), _norms64(clipped)
    assert (before > clip_norm).any() and (before < clip_norm).any()  # Both kinds are in the batch.
    assert np.all(after <= clip_norm), after.max() - clip_norm  # Exactly, measured in float64.
    small = before < clip_norm * (1 - 1e-4)
    np.testing.assert_array_equal(np.asarray(scale)[small], 1.0)  # Left as they were.
    np.testing.assert_allclose(after[~small], clip_norm, rtol=1e-4)  # Scaled to C, direction kept.
    # The clipped sum is sum_i m_i gbar_i over the unmasked examples.
    mask = jnp.asarray(np.arange(32) % 3 != 0, jnp.float32)
    sums = dp.clipped_sums(_loss, params, batch, keys, mask, clip_norm=clip_norm, multiplicity=2)
    for s, g in zip(jax.tree.leaves(sums.grads), jax.tree.leaves(clipped), strict=True):
        np.testing.assert_allclose(s, jnp.tensordot(mask, g, 1), rtol=1e-5, atol=1e-6)
    assert float(sums.count) == float(mask.sum())
    assert float(sums.clipped) == float(
        np.sum((before >= clip_norm * (1 - 2.0**-16)) & (np.asarray(mask) > 0))
    )


def test_a_non_finite_example_counts_as_zero():
    params, batch = _params(), _batch()
    batch["y"] = batch["y"].at[2].set(jnp.nan)
    sums = dp.clipped_sums(
        _loss, params, batch, jax.random.split(jax.random.key(0), 8), jnp.ones(8), clip_norm=1.0
    )
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(sums.grads))


def _zero_gradient_loss(params, batch, keys):
    """A loss that does not depend on the parameters: every per-example gradient is zero."""
    del keys
    return jnp.mean(batch["x"] ** 2) + 0.0 * jnp.sum(params["w"]) * 0.0, {}


def test_noise_std_on_a_zero_gradient_model_is_sigma_c_over_b():
    sigma, c, b, d = 1.3, 0.5, 12, 100_000
    options = dp.DPOptions(clip_norm=c, noise_multiplier=sigma, expected_batch_size=b)
    state = TrainState.create(params={"w": jnp.zeros(d)}, tx=optax.sgd(1.0))  # New params = -gradient.
    batch = {"x": jnp.ones((8, 2)), "mask": jnp.asarray([1, 1, 0, 1, 0, 0, 1, 1], jnp.float32)}
    # Two micro-batches: the noise is added once, to the sum over both.
    step = jax.jit(make_train_step(_zero_gradient_loss, privacy=options, grad_accum_steps=2))
    state1, metrics = step(state, batch, jax.random.key(0))
    noise = np.asarray(state1.params["w"], np.float64)
    expected = sigma * c / b
    assert abs(noise.std() / expected - 1) < 0.015  # Sampling error of the std: 1 / sqrt(2 d) = 0.22%.
    assert abs(noise.mean()) < 5 * expected / np.sqrt(d)
    assert stats.kstest(noise / expected, "norm").pvalue > 1e-3  # Gaussian.
    np.testing.assert_allclose(metrics["grad_norm"], expected * np.sqrt(d), rtol=0.015)
    assert float(metrics["dp_examples"]) == 5.0 and float(metrics["finite"]) == 1.0
    # The next step draws new noise (its key is folded with the step).
    state2, _ = step(state1, batch, jax.random.key(0))
    second = np.asarray(state2.params["w"], np.float64) - noise
    assert abs(np.corrcoef(noise, second)[0, 1]) < 5 / np.sqrt(d)


def test_without_clipping_or_noise_the_private_step_is_the_ordinary_one():
    params, batch = _params(), _batch()
    state = TrainState.create(params=params, tx=optax.sgd(0.01))
    # No noise, a bound no gradient reaches, and B the batch: the mean gradient of the ordinary step.
    options = dp.DPOptions(clip_norm=1e9, noise_multiplier=0.0, expected_batch_size=8)
    ordinary, _ = jax.jit(make_train_step(_loss))(state, batch, jax.random.key(4))
    for accum in (1, 2):
        private, metrics = jax.jit(make_train_step(_loss, privacy=options, grad_accum_steps=accum))(
            state, batch, jax.random.key(4)
        )
        for p, q in zip(jax.tree.leaves(private.params), jax.tree.leaves(ordinary.params), strict=True):
            np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
        assert float(metrics["dp_clipped"]) == 0.0


def test_devices_add_their_clipped_sums_before_one_noise():
    """The step under a named axis of 2 (what pmap runs) gives the one-device step's update."""
    params, batch = _params(), _batch()
    batch["mask"] = jnp.asarray([1, 0, 1, 1, 1, 0, 1, 1], jnp.float32)
    options = dp.DPOptions(clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=6)
    state = TrainState.create(params=params, tx=optax.sgd(0.1))
    one, m1 = jax.jit(make_train_step(_loss, privacy=options))(state, batch, jax.random.key(5))
    split = jax.tree.map(lambda a: a.reshape(2, 4, *a.shape[1:]), batch)
    step = make_train_step(_loss, privacy=options, axis_name="data")
    two, m2 = jax.jit(jax.vmap(step, in_axes=(None, 0, None), axis_name="data"))(
        state, split, jax.random.key(5)
    )
    for p, q in zip(jax.tree.leaves(two.params), jax.tree.leaves(one.params), strict=True):
        np.testing.assert_allclose(p[0], q, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p[1], q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m2["loss"][0], m1["loss"], rtol=1e-5)


def test_epsilon_is_dp_accountings_own_value():
    n, b, m, sigma, steps, delta = 1000, 50, 64, 2.0, 100, 1e-5
    accountant = dp.PrivacyAccountant(
        dataset_size=n, expected_batch_size=b, max_batch_size=m, noise_multiplier=sigma, delta=delta
    )
    library = pld_privacy_accountant.PLDAccountant()
    library.compose(dp_accounting.TruncatedSubsampledGaussianDpEvent(n, b / n, m, sigma), steps)
    epsilon = accountant.epsilon(steps)
    assert epsilon == library.get_epsilon(delta)  # To the last bit.
    library = pld_privacy_accountant.PLDAccountant()
    library.compose(accountant.event(steps))
    assert epsilon == library.get_epsilon(delta)
    # With as many slots as examples nothing is truncated: plain Poisson sampling's value, exactly.
    poisson = pld_privacy_accountant.PLDAccountant()
    poisson.compose(dp_accounting.PoissonSampledDpEvent(b / n, dp_accounting.GaussianDpEvent(sigma)), steps)
    plain = dataclasses.replace(accountant, max_batch_size=n).epsilon(steps)
    assert plain == poisson.get_epsilon(delta)
    assert epsilon >= plain  # Truncation only costs.
    rdp = rdp_privacy_accountant.RdpAccountant()
    rdp.compose(dp_accounting.PoissonSampledDpEvent(b / n, dp_accounting.GaussianDpEvent(sigma)), steps)
    assert plain <= rdp.get_epsilon(delta)  # PLD is the tighter accountant.
    # The steps a budget allows: the last step at or under it.
    target = 1.2
    allowed = accountant.max_steps(target, at_most=steps)
    assert 0 < allowed < steps
    assert accountant.epsilon(allowed) <= target < accountant.epsilon(allowed + 1)
    assert accountant.epsilon(0) == 0.0


def _vector_spec(n):
    return DataSpec(
        name="t", kind="vector", shape=(1,), levels=None, num_classes=None, split_sizes={"train": n}
    )


def test_poisson_batches_draw_each_example_with_probability_q():
    n, b, m = 200, 20, 32
    arrays = {"x": np.arange(n, dtype=np.float32)[:, None]}
    ds = make_poisson_dataset(arrays, _vector_spec(n), expected_batch_size=b, max_batch_size=m, seed=3)
    counts, seen = [], np.zeros(n)
    for i in range(400):
        batch = ds[i]
        assert batch["x"].shape == (m, 1) and batch["mask"].shape == (m,)
        k = int(batch["mask"].sum())
        np.testing.assert_array_equal(batch["mask"], np.arange(m) < k)  # Drawn first, padding after.
        drawn = batch["x"][:k, 0].astype(int)
        assert len(set(drawn)) == k  # No example twice in a batch.
        seen[drawn] += 1
        counts.append(k)
    assert abs(np.mean(counts) - b) < 5 * np.sqrt(b * (1 - b / n) / 400)
    assert stats.chisquare(seen).pvalue > 1e-3  # Every example at the same rate.
    np.testing.assert_array_equal(ds[7]["x"], ds[7]["x"])  # Batch i is a function of (seed, i).
    # More drawn than slots: a random subset of M.
    small = make_poisson_dataset(arrays, _vector_spec(n), expected_batch_size=b, max_batch_size=12, seed=3)
    assert all(small[i]["mask"].sum() == 12 for i in range(20))
    assert len({tuple(sorted(small[i]["x"][:, 0])) for i in range(20)}) == 20


def _private_toy(tmp_path, data_dir, **privacy):
    config = load_config("toy_vp", "smoke")
    config.data.data_dir = data_dir
    config.data.batch_size = 24
    config.train.update(dict(num_steps=4, steps_per_call=1, log_every=2, checkpoint_every=4, eval_every=0))
    config.sample.num_samples = 8
    config.privacy.update(dict(enabled=True, expected_batch_size=16, multiplicity=2, **privacy))
    return config


def test_a_private_run_logs_epsilon_and_stops_at_its_budget(tmp_path, data_dir):
    # Over the budget: one line before anything is written, with the steps the budget allows.
    config = _private_toy(tmp_path, data_dir, noise_multiplier=1.0, target_epsilon=0.05)
    config.train.num_steps = 100
    with pytest.raises(dp.PrivacyBudgetError) as error:
        train_and_evaluate(config, str(tmp_path / "over"))
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, ValueError)  # The CLI prints one line.
    accountant = dp.PrivacyAccountant(20_000, 16, 24, 1.0, 1e-5)  # toy/gmm_2d has 20,000 train examples.
    assert f"num_steps=100 would spend epsilon={accountant.epsilon(100):.3g} at delta=1e-05" in message
    allowed = int(re.search(r"the budget allows (\d+) steps: set --config.train.num_steps=(\d+)", message)[1])
    assert accountant.epsilon(allowed) <= 0.05 < accountant.epsilon(allowed + 1)
    assert not (tmp_path / "over" / "run.json").exists()

    # Within it: train/epsilon at every log step is the accountant's for the steps so far.
    config = _private_toy(tmp_path, data_dir, noise_multiplier=1.0)
    run = tmp_path / "run"
    state = train_and_evaluate(config, str(run))
    assert int(state.step) == 4
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    logged = {r["step"]: r for r in records if "train/epsilon" in r}
    assert sorted(logged) == [2, 4]
    for step, record in logged.items():
        assert record["train/epsilon"] == accountant.epsilon(step)
        assert 0 < record["train/dp_examples"] <= 24 and np.isfinite(record["train/loss"])

    # Resuming with another mechanism would break the accounting: refused.
    config.privacy.noise_multiplier = 2.0
    config.train.num_steps = 6
    with pytest.raises(ValueError, match=r"config.privacy.noise_multiplier=2.0 differs"):
        train_and_evaluate(config, str(run))


def test_config_checks():
    config = load_config("digits_vp_dp")
    check_config(config)
    # The shipped run is within its budget (sklearn digits' train split: 1437 examples).
    p = config.privacy
    accountant = dp.PrivacyAccountant(
        1437, p.expected_batch_size, config.data.batch_size, p.noise_multiplier, p.delta
    )
    assert accountant.epsilon(config.train.num_steps) <= p.target_epsilon
    check_config(load_config("digits_vp_dp", "smoke"))

    def refused(match, **changes):
        c = load_config("digits_vp_dp")
        for key, value in changes.items():
            section, name = key.split("__")
            c[section][name] = value
        with pytest.raises(ConfigError, match=match):
            check_config(c)

    gan = load_config("digits_gan")
    gan.privacy.update(dict(enabled=True, expected_batch_size=8))
    with pytest.raises(
        ConfigError, match="config.family='gan' cannot be trained with config.privacy.enabled"
    ):
        check_config(gan)
    refused(r"privacy.expected_batch_size=0 is invalid", privacy__expected_batch_size=0)
    refused(r"privacy.expected_batch_size=200 is invalid", privacy__expected_batch_size=200)
    refused(r"distributed.enabled=True is invalid", distributed__enabled=True)
    refused(r"privacy.delta=1.0 is invalid", privacy__delta=1.0)
    refused(r"privacy.multiplicity=0 is invalid", privacy__multiplicity=0)
