"""An update that would make the state non-finite is refused; no checkpoint ever holds a NaN or Inf."""

import os

import jax
import numpy as np
import pytest

from tests.reliability.conftest import TOY, error_lines, gl_jax, state_of, steps

# 1e39 is a finite number to the config check (a Python float) and Inf in float32: Adam's update is
# then +-Inf or NaN while the loss and gradients stay finite (the case the loss/gradient guard missed).
HUGE_LR = [
    "--config.optim.lr=1e39",
    "--config.optim.warmup_steps=0",
    "--config.train.num_steps=6",
    "--config.train.steps_per_call=1",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=1",
    "--config.train.max_to_keep=10",
]


def _all_finite(tree) -> bool:
    return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree))


def test_with_skip_every_kept_checkpoint_is_finite(tmp_path, data_dir):
    workdir = tmp_path / "skip"
    proc = gl_jax(
        "--config", TOY, *HUGE_LR, "--config.train.on_nonfinite=skip", "--workdir", workdir, data_dir=data_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Skipped" in proc.stderr and "non-finite updates" in proc.stderr
    assert steps(workdir) == [1, 2, 3, 4, 5, 6]
    for step in steps(workdir):
        _, state = state_of(workdir, step)
        assert _all_finite(state), step


def test_with_stop_the_error_names_the_step_and_a_finite_last_good_checkpoint(
    tmp_path, trained_toy, data_dir
):
    import shutil

    workdir = tmp_path / "stop"
    shutil.copytree(trained_toy, workdir)
    proc = gl_jax(
        "--config", TOY, *HUGE_LR, "--config.train.num_steps=30", "--workdir", workdir, data_dir=data_dir
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    [line] = error_lines(proc)
    assert "NaN/Inf at step 21; stopped. The last good checkpoint is step 20" in line, line
    assert "config.optim.lr" in line
    assert steps(workdir) == [10, 20]
    for step in steps(workdir):
        assert _all_finite(state_of(workdir, step)[1])


@pytest.mark.parametrize("lr", [float("nan"), 1e39])
def test_step_refuses_a_non_finite_update_with_finite_loss_and_gradients(lr):
    import jax.numpy as jnp

    from gl_jax.train import TrainState, make_optimizer, make_train_step

    def loss_fn(params, batch, keys):
        del keys
        loss = jnp.mean((batch["x"] @ params["w"]) ** 2)
        return loss, {}

    state = TrainState.create(params={"w": jnp.ones((3, 2))}, tx=make_optimizer(lr=lr))
    step = jax.jit(make_train_step(loss_fn))
    new, metrics = step(state, {"x": jnp.ones((4, 3))}, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    assert float(metrics["finite"]) == 0.0
    assert int(new.step) == 1
    for old, kept in zip(
        jax.tree.leaves((state.params, state.opt_state, state.ema_params)),
        jax.tree.leaves((new.params, new.opt_state, new.ema_params)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(kept))
    assert os.environ.get("JAX_ENABLE_X64") != "1"  # float32: 1e39 is Inf there.
