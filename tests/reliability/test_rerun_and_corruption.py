"""A finished run started again, and a byte flipped in each kind of file a checkpoint holds."""

import os
import re

import pytest

from gl_jax.train.integrity import CHECKSUM_FILE
from tests.reliability.conftest import (
    FOURTEEN,
    TOY,
    assert_same_state,
    copy_run,
    gl_jax,
    snapshot,
    state_of,
)


def test_rerun_of_a_finished_run_exits_zero_and_writes_missing_pictures(tmp_path, trained_toy, data_dir):
    workdir = copy_run(trained_toy, tmp_path / "run")
    os.remove(os.path.join(workdir, "loss_curve.png"))
    os.remove(os.path.join(workdir, "samples", "step_0000020.png"))
    before = snapshot(os.path.join(workdir, "checkpoints"))
    proc = gl_jax("--config", TOY, "--workdir", workdir, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is finished (step 20" in proc.stderr
    assert os.path.exists(os.path.join(workdir, "loss_curve.png"))
    assert os.path.exists(os.path.join(workdir, "samples", "step_0000020.png"))
    assert snapshot(os.path.join(workdir, "checkpoints")) == before


def _file_kinds(step_folder: str) -> dict[str, str]:
    """One file per kind (hash-named files are one kind per folder), by kind."""
    kinds = {}
    for root, _, names in os.walk(step_folder):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(root, name), step_folder)
            kinds.setdefault(re.sub(r"[0-9a-f]{32}", "<hash>", rel), rel)
    return kinds


def _flip_one_byte(path: str) -> None:
    with open(path, "r+b") as f:
        data = f.read()
        offset = len(data) // 2
        f.seek(offset)
        f.write(bytes([data[offset] ^ 0x01]))


def test_a_flipped_byte_in_each_kind_of_checkpoint_file_is_caught_set_aside_and_retrained_bitwise(
    tmp_path, trained_toy_140, data_dir
):
    """Kind i is corrupted in step 140 - 10 i; restarting walks back through every corrupt step (each the
    latest when it is read), moves each aside, resumes from step 10 and retrains to an identical state."""
    kinds = _file_kinds(os.path.join(trained_toy_140, "checkpoints", "140"))
    # orbax's files (metadata, array data in OCDBT, manifests, commit markers) and the checksums.
    assert len(kinds) >= 10 and CHECKSUM_FILE in kinds, sorted(kinds)
    assert len(kinds) <= 13  # Steps 140 ... 20 hold one corrupt kind each; 10 stays sound.
    workdir = copy_run(trained_toy_140, tmp_path / "run")
    _, reference = state_of(workdir)
    earlier = snapshot(os.path.join(workdir, "checkpoints", "10"))
    corrupted = {}
    for i, kind in enumerate(sorted(kinds)):
        step = 140 - 10 * i
        folder = os.path.join(workdir, "checkpoints", str(step))
        _flip_one_byte(os.path.join(folder, _file_kinds(folder)[kind]))  # Hash names differ per step.
        corrupted[step] = kind
    proc = gl_jax("--config", TOY, *FOURTEEN, "--workdir", workdir, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for step, kind in corrupted.items():
        pattern = rf"step {step} in \S+ is corrupt \((.*)\); moved it to \S+/corrupt/{step} "
        match = re.search(pattern, proc.stderr)
        assert match, (kind, proc.stderr[-3000:])
        assert os.path.isdir(os.path.join(workdir, "checkpoints", "corrupt", str(step)))  # Kept.
    assert f"Resumed from step {min(corrupted) - 10}" in proc.stderr
    assert snapshot(os.path.join(workdir, "checkpoints", "10")) == earlier
    step, state = state_of(workdir)
    assert step == 140
    assert_same_state(state, reference)


@pytest.mark.parametrize("mode", ["sample"])
def test_a_reader_skips_a_corrupt_step_without_touching_it(tmp_path, trained_toy, data_dir, mode):
    workdir = copy_run(trained_toy, tmp_path / "run")
    kinds = _file_kinds(os.path.join(workdir, "checkpoints", "20"))
    data_file = next(rel for kind, rel in kinds.items() if kind.startswith("state/ocdbt.process_0/d/"))
    _flip_one_byte(os.path.join(workdir, "checkpoints", "20", data_file))
    before = snapshot(os.path.join(workdir, "checkpoints"))
    proc = gl_jax("--config", TOY, "--workdir", workdir, "--mode", mode, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "step 20" in proc.stderr
        and "corrupt" in proc.stderr
        and "Sampled from the checkpoint of step 10" in proc.stderr
    )
    assert snapshot(os.path.join(workdir, "checkpoints")) == before  # Readers never move or delete.
