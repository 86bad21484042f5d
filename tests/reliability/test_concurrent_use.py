"""Readers beside a trainer on one workdir, and one trainer per workdir."""

import re
import signal
import socket

import pytest

from tests.reliability.conftest import (
    LONG,
    TOY,
    assert_same_state,
    error_lines,
    gl_jax,
    launch,
    state_of,
    steps,
    wait_for_checkpoint,
)

EVAL = [
    "--config.eval.num_samples=64",
    "--config.eval.batch_size=64",
    "--config.eval.bpd_examples=0",
    "--config.eval.kid_subset_size=32",
    "--config.eval.kid_subsets=4",
    "--config.stats.num_features=256",
]


@pytest.mark.slow  # ~100 s on 2 cores; the lock and reader tests of this file stay in the default run.
def test_three_samplers_and_an_evaluation_beside_training_leave_it_bitwise_undisturbed(tmp_path, data_dir):
    reference = tmp_path / "undisturbed"
    proc = gl_jax("--config", TOY, *LONG, "--workdir", reference, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]

    workdir = tmp_path / "shared"
    trainer = launch("--config", TOY, *LONG, "--workdir", workdir, data_dir=data_dir)
    wait_for_checkpoint(trainer, workdir, at_least=100)
    readers = [
        launch("--config", TOY, "--workdir", workdir, "--mode", "sample", data_dir=data_dir) for _ in "abc"
    ]
    readers.append(launch("--config", TOY, "--workdir", workdir, "--mode", "eval", *EVAL, data_dir=data_dir))
    outputs = [r.communicate(timeout=600) for r in readers]
    _, err = trainer.communicate(timeout=600)

    assert trainer.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    saved = set(range(100, 6001, 100))  # Every step the trainer finished a checkpoint of.
    for reader, (_, reader_err) in zip(readers, outputs, strict=True):
        assert reader.returncode == 0, reader_err[-3000:]
        assert "Traceback" not in reader_err
    read = [int(re.search(r"Sampled from the checkpoint of step (\d+)", e).group(1)) for _, e in outputs[:3]]
    assert set(read) <= saved, read
    assert min(read) < 6000, read  # They read while the trainer was still going.
    assert steps(workdir) == [5900, 6000]
    assert not (workdir / "checkpoints" / "corrupt").exists()
    step, state = state_of(workdir)
    ref_step, ref_state = state_of(reference)
    assert step == ref_step == 6000
    assert_same_state(state, ref_state)


def test_a_second_trainer_is_refused_naming_the_holder_and_a_killed_holders_lock_is_free_at_once(
    tmp_path, data_dir
):
    workdir = tmp_path / "run"
    holder = launch("--config", TOY, *LONG, "--workdir", workdir, data_dir=data_dir)
    try:
        wait_for_checkpoint(holder, workdir, at_least=100)
        second = gl_jax("--config", TOY, *LONG, "--workdir", workdir, data_dir=data_dir)
        assert second.returncode != 0 and holder.poll() is None
        assert "Traceback" not in second.stderr
        [line] = error_lines(second)
        assert f"process {holder.pid} on host {socket.gethostname()}" in line, line
        assert "in use" in line and "--workdir" in line, line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    last = steps(workdir)[-1]
    # At once: no stale lock. The run is past num_steps=100, so the new trainer only says it is done.
    after = gl_jax(
        "--config", TOY, *LONG, "--config.train.num_steps=100", "--workdir", workdir, data_dir=data_dir
    )
    assert after.returncode == 0, after.stderr[-3000:]
    assert "is finished" in after.stderr and steps(workdir)[-1] == last
