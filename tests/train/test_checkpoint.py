"""Checkpoint saves that cannot be written: one clear error naming the folder and the fix, nothing lost."""

import errno
import os

import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from gl_jax.train import TrainState, make_optimizer
from gl_jax.train.checkpoint import Checkpointer, CheckpointError


def _state(value):
    state = TrainState.create(params={"w": jnp.full((3,), value)}, tx=make_optimizer(lr=1e-3))
    return state.replace(step=jnp.asarray(int(value), jnp.int32))


def _fail_writes(monkeypatch, code):
    def fail(self, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(epath.gpath.PosixGPath, "write_text", fail)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_read_only_disk_while_saving_names_the_folder_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch
):
    ckpt = Checkpointer(str(tmp_path), max_to_keep=1)
    ckpt.save(_state(1.0), {"next_index": 1})
    ckpt.wait()
    _fail_writes(monkeypatch, errno.EROFS)  # The disk is remounted read-only mid-run.
    ckpt.save(_state(2.0), {"next_index": 2})  # Asynchronous: the failure shows when it is waited for.
    with pytest.raises(CheckpointError) as info:
        ckpt.save(_state(3.0), {"next_index": 3})
    message = str(info.value)
    assert f"checkpoint of step 2 in {tmp_path}" in message and "Read-only file system" in message
    assert f"Make {tmp_path} writable" in message and "step 1 is intact" in message
    ckpt.close()  # Already reported: no second error.
    monkeypatch.undo()

    # max_to_keep=1 did not delete step 1 for the save that failed.
    state, data = Checkpointer(str(tmp_path)).restore_latest(_state(0.0))
    assert int(state.step) == 1 and data == {"next_index": 1}
    np.testing.assert_array_equal(state.params["w"], 1.0)


def test_disk_without_room_is_refused_before_writing(tmp_path, monkeypatch):
    ckpt = Checkpointer(str(tmp_path), max_to_keep=3)
    ckpt.save(_state(1.0), {"next_index": 1})
    ckpt.wait()
    usage = os.statvfs(tmp_path)
    monkeypatch.setattr(
        "shutil.disk_usage", lambda path: type("Usage", (), {"free": 1000, "total": usage.f_blocks})()
    )
    with pytest.raises(
        CheckpointError, match=r"step 2 .*No space left on device \(1000 bytes free.*Free space"
    ):
        ckpt.save(_state(2.0), {"next_index": 2})
    ckpt.close()
    assert sorted(os.listdir(tmp_path)) == ["1"]  # Nothing was started.
