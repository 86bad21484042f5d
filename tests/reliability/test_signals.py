"""SIGINT and SIGTERM during training save and stop; during start-up they end the command with one line."""

import os
import signal
import time

import pytest

from tests.reliability.conftest import (
    LONG,
    TOY,
    copy_run,
    launch,
    snapshot,
    steps,
    wait_for_checkpoint,
)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_a_signal_mid_run_saves_a_checkpoint_then_stops(tmp_path, data_dir, signum, code):
    proc = launch("--config", TOY, *LONG, "--workdir", tmp_path, data_dir=data_dir)
    wait_for_checkpoint(proc, tmp_path, at_least=200)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = steps(tmp_path)[-1]
    assert 200 <= last < 6000
    name = signal.Signals(signum).name
    message = f"{name}: saved the checkpoint of step {last} in {tmp_path / 'checkpoints'} and stopped"
    assert message in err, err[-2000:]
    if signum == signal.SIGINT:
        assert error_lines_of(err) == [f"gl-jax: {message}; rerun to resume."]


def error_lines_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("gl-jax:")]


# SIGTERM at start-up takes the same path as Ctrl-C; it is slow-marked for time (~25 s on 2 cores).
@pytest.mark.parametrize("signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_a_signal_during_start_up_is_one_line_and_changes_nothing(tmp_path, trained_toy, data_dir, signum):
    workdir = copy_run(trained_toy, tmp_path / "run")
    before = snapshot(os.path.join(workdir, "checkpoints"))
    # Asked to train on to step 40: start-up (imports, data, restore, compilation) takes seconds.
    proc = launch("--config", TOY, "--config.train.num_steps=40", "--workdir", workdir, data_dir=data_dir)
    time.sleep(1.0)
    assert proc.poll() is None
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    name = signal.Signals(signum).name
    assert error_lines_of(err) == [f"gl-jax: interrupted by {name} during start-up; nothing was saved"], err
    assert snapshot(os.path.join(workdir, "checkpoints")) == before
    assert steps(workdir) == [10, 20]


def test_a_signal_whose_exception_python_swallowed_is_raised_again_and_not_printed(capfd):
    """A handler can run inside a garbage-collector callback, where Python prints and drops exceptions."""
    import gc

    from gl_jax.interrupts import Interrupted, handle_signals

    class Collected:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # The handler runs here, and its exception is swallowed.

    before = signal.getsignal(signal.SIGTERM)
    with handle_signals() as signals:
        Collected()
        gc.collect()
        assert signals.pending == signal.SIGTERM
        with pytest.raises(Interrupted, match="interrupted by SIGTERM during start-up") as info:
            with signals.defer():
                pass  # Never reached: entering the loop raises for the recorded signal.
        assert info.value.exit_code == 128 + signal.SIGTERM
    assert "Traceback" not in capfd.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # The previous handler is back.
