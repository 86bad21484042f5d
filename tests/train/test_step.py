"""The shared train step: same numbers on 1 device, a 4-device mesh and pmap; EMA; NaN guard; fusion;
gradient accumulation; bf16 compute."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gl_jax.train import TrainState, make_optimizer, make_train_step, parallel
from gl_jax.train.step import ema_decay_at, ema_init_weight


# ~100 s on 2 cores, and four virtual devices' all-reduce can time out (XLA's 40 s rendezvous) on a loaded
# 2-core machine; test_distributed.py (two processes of two devices = one of four) stays in the default run.
@pytest.mark.slow
def test_loss_equal_on_1_device_4_devices_and_pmap():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.train._three_steps"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert len(out["jit_1"]) == 3
    # The losses move (the step does something) ...
    assert out["jit_1"][0] != out["jit_1"][2]
    # ... and agree across layouts.
    np.testing.assert_allclose(out["jit_4"], out["jit_1"], atol=1e-5, rtol=1e-5)
    for name in ("fsdp_4", "data2_fsdp2"):  # The state sharded over "fsdp": the same numbers.
        assert out[name + "_sharded_leaves"] > 10 and out["jit_4_sharded_leaves"] == 0
        np.testing.assert_allclose(out[name], out["jit_1"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(out[name + "_param_sum"], out["jit_1_param_sum"], rtol=1e-5)
    np.testing.assert_allclose(out["pmap"], out["jit_1"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out["jit_4_param_sum"], out["jit_1_param_sum"], rtol=1e-5)
    np.testing.assert_allclose(out["pmap_param_sum"], out["jit_1_param_sum"], rtol=1e-5)


@pytest.mark.slow
def test_accumulation_bf16_remat_and_fused_steps_alike_with_the_state_sharded():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.train._three_steps", "--options"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert len(out["options_1"]) == 3 and out["options_1"][0] != out["options_1"][2]
    np.testing.assert_allclose(out["options_fsdp_4"], out["options_1"], rtol=2e-3)


def _quadratic_loss(params, batch, keys):
    """(w - mean x)^2 plus noise drawn from the per-example keys (to check they are used)."""
    noise = jax.vmap(lambda k: jax.random.normal(k, ()))(keys)
    loss = jnp.mean((params["w"] - batch["x"]) ** 2 + 0.0 * noise)
    return loss, {"noise_mean": jnp.mean(noise)}


def _state(lr=0.1):
    return TrainState.create(params={"w": jnp.zeros(())}, tx=optax.sgd(lr))


def test_step_updates_params_and_ema_exactly():
    step = jax.jit(make_train_step(_quadratic_loss, ema_decay=0.5))
    batch = {"x": jnp.full((4,), 2.0)}
    state, metrics = step(_state(), batch, jax.random.key(0))
    # grad of (w - 2)^2 at 0 is -4; SGD with lr 0.1 gives w = 0.4; EMA = 0.5 * 0 + 0.5 * 0.4.
    np.testing.assert_allclose(state.params["w"], 0.4, rtol=1e-6)
    np.testing.assert_allclose(state.ema_params["w"], 0.2, rtol=1e-6)
    assert int(state.step) == 1 and int(metrics["step"]) == 0
    np.testing.assert_allclose(metrics["loss"], 4.0)
    np.testing.assert_allclose(metrics["grad_norm"], 4.0)
    assert float(metrics["finite"]) == 1.0
    # The step key is folded with the step: the next step draws other noise.
    _, metrics2 = step(state, batch, jax.random.key(0))
    assert float(metrics2["noise_mean"]) != float(metrics["noise_mean"])


def test_ema_warmup_follows_tensorflows_rule_and_forgets_the_initialisation():
    decay = 0.999
    step = jax.jit(
        make_train_step(lambda p, b, k: (jnp.sum(p["w"] * 0.0), {}), ema_decay=decay, ema_warmup=True)
    )
    # A zero loss leaves w at 1; the EMA starts at 0 (as if initialised apart) and follows
    # e_{n+1} = d_n e_n + (1 - d_n) w with d_n = min(decay, (1 + n) / (10 + n)).
    state = TrainState.create(params={"w": jnp.ones(())}, tx=optax.sgd(0.1)).replace(
        ema_params={"w": jnp.zeros(())}
    )
    want = 0.0
    for n in range(30):
        state, _ = step(state, {"x": jnp.zeros((2,))}, jax.random.key(0))
        d = min(decay, (1 + n) / (10 + n))
        want = d * want + (1 - d)
        np.testing.assert_allclose(float(state.ema_params["w"]), want, rtol=1e-5)
    # 1 - e is the weight left on the initialisation: the product of the decays.
    np.testing.assert_allclose(1.0 - want, ema_init_weight(30, decay, warmup=True), rtol=1e-4)
    assert ema_init_weight(30, decay, warmup=True) < 1e-6 < 0.97 < ema_init_weight(30, decay, warmup=False)
    # (1 + n) / (10 + n) reaches 0.999 at n = 8991.
    np.testing.assert_allclose(float(ema_decay_at(5000, decay, warmup=True)), 5001 / 5010, rtol=1e-7)
    assert float(ema_decay_at(9000, decay, warmup=True)) == np.float32(decay)
    np.testing.assert_allclose(ema_init_weight(846, decay, warmup=False), 0.999**846)


def test_nonfinite_loss_keeps_previous_state():
    step = jax.jit(make_train_step(_quadratic_loss))
    state = _state()
    state, _ = step(state, {"x": jnp.full((4,), 2.0)}, jax.random.key(0))
    new, metrics = step(state, {"x": jnp.array([1.0, jnp.nan, 0.0, 1.0])}, jax.random.key(0))
    assert float(metrics["finite"]) == 0.0
    assert int(new.step) == 2
    np.testing.assert_array_equal(new.params["w"], state.params["w"])
    np.testing.assert_array_equal(new.ema_params["w"], state.ema_params["w"])


def test_fused_steps_equal_single_steps():
    tx = make_optimizer(lr=0.05, warmup_steps=2)
    mesh = parallel.make_mesh(jax.devices()[:1])
    make = lambda: TrainState.create(params={"w": jnp.zeros(()), "v": jnp.ones((3,))}, tx=tx)
    loss = lambda p, b, k: (jnp.mean((p["w"] * p["v"].sum() - b["x"]) ** 2), {})
    single = parallel.compile_train_step(make_train_step(loss), mesh)
    fused = parallel.compile_train_step(make_train_step(loss), mesh, steps_per_call=4)
    xs = np.arange(16, dtype=np.float32).reshape(4, 4)
    s1 = make()
    for i in range(4):
        s1, m1 = single(s1, {"x": xs[i]}, jax.random.key(0))
    s4, m4 = fused(make(), {"x": xs}, jax.random.key(0))
    assert m4["loss"].shape == (4,)
    np.testing.assert_allclose(m4["loss"][-1], m1["loss"], rtol=1e-6)
    np.testing.assert_allclose(s4.params["w"], s1.params["w"], rtol=1e-6)
    assert int(s4.step) == 4


def test_optimizer_schedule_and_clipping():
    from gl_jax.train.optim import make_schedule

    sched = make_schedule(lr=1.0, warmup_steps=10, schedule="cosine", total_steps=110)
    np.testing.assert_allclose(
        [sched(0), sched(5), sched(10), sched(60), sched(110)], [0, 0.5, 1, 0.5, 0], atol=1e-6
    )
    # With a large eps, Adam's first update is about -lr * g / eps, so it shows the clipped gradient:
    # [30, 40] has norm 50 and is clipped to [0.6, 0.8].
    params = {"w": jnp.zeros(2)}
    for clip, expected in ((1.0, [0.6, 0.8]), (0.0, [30.0, 40.0])):
        tx = make_optimizer(optimizer="adam", lr=1.0, eps=1e3, grad_clip=clip)
        updates, _ = tx.update({"w": jnp.array([30.0, 40.0])}, tx.init(params), params)
        np.testing.assert_allclose(updates["w"], [-e / (e + 1e3) for e in expected], rtol=1e-4)
    import pytest

    with pytest.raises(ValueError, match="adamw"):
        make_optimizer(optimizer="adam", weight_decay=0.1)


def _toy_family():
    from gl_jax.families.diffusion import ScoreDiffusion
    from gl_jax.models import ScoreMLP
    from gl_jax.sde import VPSDE

    return ScoreDiffusion(model=ScoreMLP(features=(32, 32), embed_dim=16), sde=VPSDE(), data_shape=(2,))


def test_grad_accumulation_4_of_8_equals_one_batch_of_32():
    family = _toy_family()
    # SGD rather than Adam, whose first update is ~lr * sign(g) and so would amplify round-off in tiny
    # gradients; clipping (the gradient norm is ~2) checks the accumulated gradient's norm too.
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.5))
    make = lambda: TrainState.create(params=family.init(jax.random.key(0)), tx=tx)
    batch = {"x": np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)}
    whole, m1 = jax.jit(make_train_step(family.loss))(make(), batch, jax.random.key(1))
    accum, m4 = jax.jit(make_train_step(family.loss, grad_accum_steps=4))(make(), batch, jax.random.key(1))
    # The diffusion loss draws times and noise from the per-example keys: equal losses mean the
    # micro-batches saw the same keys as the whole batch.
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-6)
    np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-5)
    start = jax.tree.leaves(make().params)
    moved = max(
        float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(whole.params), start, strict=True)
    )
    assert moved > 1e-3  # The step did something.
    for a, b in zip(jax.tree.leaves(accum), jax.tree.leaves(whole), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)

    with pytest.raises(ValueError, match="grad_accum_steps=5"):
        jax.jit(make_train_step(family.loss, grad_accum_steps=5))(make(), batch, jax.random.key(1))


def test_bf16_compute_keeps_fp32_master_weights_and_gradients():
    family = _toy_family()
    state = TrainState.create(params=family.init(jax.random.key(0)), tx=optax.sgd(0.1))
    batch = {"x": np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)}
    step = make_train_step(family.loss, compute_dtype=jnp.bfloat16)
    hlo = jax.jit(step).lower(state, batch, jax.random.key(1)).as_text()
    dots = [line for line in hlo.splitlines() if "dot_general" in line]
    assert dots and all("bf16" in line for line in dots)  # Every matmul, forward and backward, is bf16.

    new, metrics = jax.jit(step)(state, batch, jax.random.key(1))
    _, reference = jax.jit(make_train_step(family.loss))(state, batch, jax.random.key(1))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((new.params, new.ema_params, new.opt_state)))
    assert metrics["loss"].dtype == jnp.float32 and float(metrics["finite"]) == 1.0
    np.testing.assert_allclose(metrics["loss"], reference["loss"], rtol=2e-2)
    np.testing.assert_allclose(metrics["grad_norm"], reference["grad_norm"], rtol=5e-2)


def test_accumulation_divides_compiled_activation_memory():
    from gl_jax.families.diffusion import ScoreDiffusion
    from gl_jax.models import ScoreMLP
    from gl_jax.sde import VPSDE
    from tests.train._memory import temp_bytes

    family = ScoreDiffusion(model=ScoreMLP(features=(128, 128), embed_dim=32), sde=VPSDE(), data_shape=(2,))
    whole = temp_bytes(family, 4096)
    accum = temp_bytes(family, 4096, grad_accum_steps=4)
    assert accum < 0.4 * whole, (accum, whole)
