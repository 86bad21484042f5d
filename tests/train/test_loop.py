"""The training job: resume after SIGKILL bit for bit, SIGTERM saves, NaN stops, corrupt checkpoints."""

import logging
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gl_jax.train import TrainState, make_optimizer
from gl_jax.train.checkpoint import Checkpointer, CheckpointError
from tests.conftest import REPO, load_config

# A toy run long enough to be killed part-way: ~1 ms per step after compilation.
TOY_ARGS = [
    "--config",
    str(REPO / "experiments" / "toy_vp.py") + ":smoke",
    "--config.train.num_steps=4000",
    "--config.train.steps_per_call=1",
    "--config.train.log_every=100",
    "--config.train.checkpoint_every=100",
    "--config.train.max_to_keep=2",
]


def _launch(workdir, data_dir):
    env = {**os.environ, "TFDS_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-m", "gl_jax.main", *TOY_ARGS, "--workdir", str(workdir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _steps(workdir):
    ckpt = workdir / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


def _wait_for_checkpoint(proc, workdir, at_least, timeout=300):
    start = time.time()
    while time.time() - start < timeout:
        steps = _steps(workdir)
        if steps and steps[-1] >= at_least:
            return steps[-1]
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.01)
    raise TimeoutError("no checkpoint appeared")


def _final_state(workdir):
    step = _steps(workdir)[-1]
    restored = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
    return step, restored


def test_sigkill_then_restart_is_bitwise_equal_to_uninterrupted(tmp_path, data_dir):
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    ref = _launch(ref_dir, data_dir)
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]

    proc = _launch(killed_dir, data_dir)
    killed_at = _wait_for_checkpoint(proc, killed_dir, at_least=1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert killed_at < 4000 and _steps(killed_dir)[-1] < 4000

    restart = _launch(killed_dir, data_dir)
    out, err = restart.communicate(timeout=600)
    assert restart.returncode == 0, err[-3000:]

    ref_step, ref_state = _final_state(ref_dir)
    step, state = _final_state(killed_dir)
    assert ref_step == step == 4000
    ref_leaves, leaves = jax.tree.leaves(ref_state), jax.tree.leaves(state)
    assert len(ref_leaves) == len(leaves) > 4
    for a, b in zip(ref_leaves, leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sigterm_saves_and_exits_cleanly(tmp_path, data_dir):
    proc = _launch(tmp_path, data_dir)
    _wait_for_checkpoint(proc, tmp_path, at_least=200)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    last = _steps(tmp_path)[-1]
    assert 200 <= last < 4000
    assert "SIGTERM" in err and f"step {last}" in err


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    from gl_jax.families.diffusion import ScoreDiffusion
    from gl_jax.train.loop import NonFiniteLossError, train_and_evaluate

    config = load_config("toy_vp", "smoke")
    config.data.data_dir = data_dir
    train_and_evaluate(config, str(tmp_path))
    assert _steps(tmp_path) == [10, 20]
    good = _final_state(tmp_path)[1]

    original = ScoreDiffusion.loss

    def nan_loss(self, params, batch, keys):
        loss, metrics = original(self, params, batch, keys)
        return loss * jnp.nan, metrics

    monkeypatch.setattr(ScoreDiffusion, "loss", nan_loss)
    config.train.num_steps = 40
    with pytest.raises(NonFiniteLossError, match=r"at step 21; stopped.*last good checkpoint is step 20"):
        train_and_evaluate(config, str(tmp_path))
    assert _steps(tmp_path) == [10, 20]
    for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(_final_state(tmp_path)[1]), strict=True):
        np.testing.assert_array_equal(a, b)


def _small_state(value):
    tx = make_optimizer(lr=1e-3)
    state = TrainState.create(params={"w": jnp.full((3,), value)}, tx=tx)
    return state.replace(step=jnp.asarray(int(value), jnp.int32))


def test_corrupt_latest_checkpoint_falls_back_with_warning(tmp_path, caplog):
    ckpt = Checkpointer(str(tmp_path), max_to_keep=3)
    ckpt.save(_small_state(1.0), {"next_index": 1})
    ckpt.save(_small_state(2.0), {"next_index": 2})
    ckpt.wait()
    # Corrupt every file of the latest state item.
    for root, _, files in os.walk(tmp_path / "2" / "state"):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    with caplog.at_level(logging.WARNING):
        state, data = ckpt.restore_latest(_small_state(0.0))
    assert int(state.step) == 1 and data == {"next_index": 1}
    np.testing.assert_array_equal(state.params["w"], 1.0)
    assert "step 2" in caplog.text and "falling back" in caplog.text

    for root, _, files in os.walk(tmp_path / "1" / "state"):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(CheckpointError, match="None of the checkpoints"):
        ckpt.restore_latest(_small_state(0.0))
    ckpt.close()


def test_unwritable_workdir_is_one_clear_error(tmp_path):
    from gl_jax.train.loop import WorkdirError, train_and_evaluate

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkdirError, match="not writable.*--workdir"):
        train_and_evaluate(load_config("toy_vp", "smoke"), str(blocker / "run"))


def test_workdir_of_another_config_is_refused(tmp_path, data_dir):
    from gl_jax.train.loop import train_and_evaluate

    config = load_config("toy_vp", "smoke")
    config.data.data_dir = data_dir
    config.train.num_steps = 10
    train_and_evaluate(config, str(tmp_path))
    config.model.features = (16, 16)
    with pytest.raises(CheckpointError, match=r"different model or data config.*has shape.*new --workdir"):
        train_and_evaluate(config, str(tmp_path))
