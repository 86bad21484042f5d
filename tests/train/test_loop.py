"""The training job: resume after SIGKILL bit for bit, SIGTERM saves, NaN stops, corrupt checkpoints, a full
disk, bf16 training."""

import logging
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from gl_jax.train import TrainState, make_optimizer
from gl_jax.train.checkpoint import Checkpointer, CheckpointError
from tests.conftest import REPO, load_config
from tests.reliability.conftest import steps, wait_for_checkpoint

# A toy run long enough to be killed part-way: ~1 ms per step after compilation.
TOY_ARGS = [
    "--config",
    str(REPO / "experiments" / "toy_vp.py") + ":smoke",
    "--config.train.num_steps=2000",
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


def _final_state(workdir):
    step = steps(workdir)[-1]
    restored = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
    return step, restored


def _killed_and_restarted_equals_uninterrupted(tmp_path, data_dir, *, kills, seed):
    """Kills a run `kills` times with SIGKILL at seeded random points and restarts it each time."""
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    ref = _launch(ref_dir, data_dir)
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]

    rng = np.random.default_rng(seed)
    # Wait for a checkpoint at or after each target step, then up to ~50 more steps (~1 ms each), so the
    # kills land between checkpoints or during a save.
    targets = np.sort(rng.choice(np.arange(3, 18, 3), size=kills, replace=False)) * 100  # >= 300 apart.
    for target in targets:
        proc = _launch(killed_dir, data_dir)
        wait_for_checkpoint(proc, killed_dir, at_least=int(target))
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert steps(killed_dir)[-1] < 2000

    restart = _launch(killed_dir, data_dir)
    out, err = restart.communicate(timeout=600)
    assert restart.returncode == 0, err[-3000:]

    ref_step, ref_state = _final_state(ref_dir)
    step, state = _final_state(killed_dir)
    assert ref_step == step == 2000
    ref_leaves, leaves = jax.tree.leaves(ref_state), jax.tree.leaves(state)
    assert len(ref_leaves) == len(leaves) > 4
    for a, b in zip(ref_leaves, leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sigkill_then_restart_is_bitwise_equal_to_uninterrupted(tmp_path, data_dir):
    _killed_and_restarted_equals_uninterrupted(tmp_path, data_dir, kills=1, seed=0)


@pytest.mark.slow
def test_five_sigkills_at_random_steps_then_restart_is_bitwise_equal(tmp_path, data_dir):
    _killed_and_restarted_equals_uninterrupted(tmp_path, data_dir, kills=5, seed=1)


def test_sigterm_saves_and_exits_cleanly(tmp_path, data_dir):
    proc = _launch(tmp_path, data_dir)
    wait_for_checkpoint(proc, tmp_path, at_least=200)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    last = steps(tmp_path)[-1]
    assert 200 <= last < 2000
    assert "SIGTERM" in err and f"step {last}" in err


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    from gl_jax.families.diffusion import ScoreDiffusion
    from gl_jax.train.loop import NonFiniteLossError, train_and_evaluate

    config = load_config("toy_vp", "smoke")
    config.data.data_dir = data_dir
    train_and_evaluate(config, str(tmp_path))
    assert steps(tmp_path) == [10, 20]
    good = _final_state(tmp_path)[1]

    original = ScoreDiffusion.loss

    def nan_loss(self, params, batch, keys):
        loss, metrics = original(self, params, batch, keys)
        return loss * jnp.nan, metrics

    monkeypatch.setattr(ScoreDiffusion, "loss", nan_loss)
    config.train.num_steps = 40
    with pytest.raises(NonFiniteLossError, match=r"at step 21; stopped.*last good checkpoint is step 20"):
        train_and_evaluate(config, str(tmp_path))
    assert steps(tmp_path) == [10, 20]
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
    from gl_jax.train.loop import train_and_evaluate
    from gl_jax.train.workdir import WorkdirError

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
    # The run's record names the change before anything is read...
    with pytest.raises(ValueError, match=r"config\.model=.*differs from the run in .*new --workdir"):
        train_and_evaluate(config, str(tmp_path))
    # ...and without a record (a run of an older gl_jax) the checkpoint's shapes do.
    (tmp_path / "run.json").unlink()
    with pytest.raises(CheckpointError, match=r"different model or data config.*has shape.*new --workdir"):
        train_and_evaluate(config, str(tmp_path))


def test_bf16_training_converges_with_fp32_params(tmp_path, data_dir):
    from gl_jax.train.loop import train_and_evaluate
    from gl_jax.train.writers import read_metrics

    config = load_config("toy_vp", "smoke")
    config.data.data_dir = data_dir
    config.train.compute_dtype = "bfloat16"
    config.train.num_steps = 150
    config.train.checkpoint_every = 150
    state = train_and_evaluate(config, str(tmp_path))
    losses = [r["train/loss"] for r in read_metrics(str(tmp_path)) if "train/loss" in r]
    assert len(losses) == 15 and np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.6 * losses[0], losses
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((state.params, state.ema_params)))


# orbax's background writer threads report the injected failure once more after the manager closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_full_disk_while_saving_is_one_clear_error_and_keeps_previous_checkpoint(
    tmp_path, data_dir, monkeypatch
):
    import errno

    from etils import epath

    from gl_jax.train.loop import train_and_evaluate

    config = load_config("toy_vp", "smoke")  # 20 steps, checkpoints at 10 and 20.
    config.data.data_dir = data_dir
    original_save = Checkpointer.save

    def enospc(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    def save_then_fill_disk(self, state, data_state):
        original_save(self, state, data_state)
        self.wait()
        # The disk fills up after the first checkpoint: orbax's next write fails part-way.
        monkeypatch.setattr(epath.gpath.PosixGPath, "write_text", enospc)

    monkeypatch.setattr(Checkpointer, "save", save_then_fill_disk)
    with pytest.raises(CheckpointError) as info:
        train_and_evaluate(config, str(tmp_path))
    message = str(info.value)
    assert "checkpoint of step 20" in message and str(tmp_path / "checkpoints") in message
    assert "No space left on device" in message and "Free space on that disk" in message
    assert "step 10 is intact" in message
    monkeypatch.undo()

    assert steps(tmp_path) == [10]
    step, state = _final_state(tmp_path)  # Readable.
    assert step == 10 and int(state["step"]) == 10
    # The next start removes the failed save's partial folder, freeing its space.
    assert [p for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]
    Checkpointer(str(tmp_path / "checkpoints")).close()
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]


def test_sampling_with_an_ema_still_near_its_initialisation_warns_and_names_the_fix(caplog):
    import ml_collections

    from gl_jax.train.experiment import sampling_params

    config = ml_collections.ConfigDict(
        {"sample": {"use_ema": True}, "train": {"ema_decay": 0.999, "ema_warmup": False}}
    )
    state = TrainState.create(params={"w": jnp.ones(())}, tx=optax.sgd(0.1))
    early = state.replace(step=jnp.asarray(846), ema_params={"w": jnp.zeros(())})
    with caplog.at_level("WARNING", logger="gl_jax"):
        assert float(sampling_params(early, config)["w"]) == 0.0  # The EMA parameters all the same.
    assert "43% of them" in caplog.text and "--config.sample.use_ema=False" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="gl_jax"):
        sampling_params(early.replace(step=jnp.asarray(5000)), config)  # 0.7% left: no warning.
    assert not caplog.text
    config.train.ema_warmup = True  # The warm-up forgets the initialisation in the first updates.
    with caplog.at_level("WARNING", logger="gl_jax"):
        sampling_params(early, config)
    assert not caplog.text
    config.sample.use_ema = False
    assert float(sampling_params(early, config)["w"]) == 1.0
