"""The shared train step: same numbers on 1 device, a 4-device mesh and pmap; EMA; NaN guard; fusion."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gl_jax.train import TrainState, make_optimizer, make_train_step, parallel


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
    np.testing.assert_allclose(out["pmap"], out["jit_1"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out["jit_4_param_sum"], out["jit_1_param_sum"], rtol=1e-5)
    np.testing.assert_allclose(out["pmap_param_sum"], out["jit_1_param_sum"], rtol=1e-5)


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
