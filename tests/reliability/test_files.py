"""Files written whole, metrics that resume without duplicates, and caches that recover from corruption."""

import json
import logging
import os

import numpy as np
import pytest

from gl_jax import files
from gl_jax.train.writers import MetricsWriter, read_metrics


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    files.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), files.atomic_open(path, "w") as f:
        f.write('{"a": 2, "half')
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["report.json"]
    files.save_npz(tmp_path / "x.npz", x=np.arange(3))
    with np.load(tmp_path / "x.npz") as f:
        np.testing.assert_array_equal(f["x"], np.arange(3))


def test_metrics_resume_drops_later_steps_and_a_partial_line(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (10, 20, 30)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 40, "lo')  # Killed mid-line.
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [10, 20, 30]
    writer = MetricsWriter(str(tmp_path), resume_step=20)
    writer.write_scalars(30, {"loss": 0.5})
    writer.close()
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [10, 20, 30] and records[-1]["loss"] == 0.5
    text = (tmp_path / "metrics.jsonl").read_text()
    assert text.endswith("\n") and text.count("\n") == 3


def test_an_evaluation_run_again_replaces_its_steps_record_only(tmp_path):
    (tmp_path / "eval").mkdir()
    for step, fid in ((10, 5.0), (20, 4.0), (10, 3.0)):  # Step 10's checkpoint evaluated twice.
        writer = MetricsWriter(str(tmp_path), replace_step=step, jsonl="eval/metrics.jsonl", tensorboard="tb")
        writer.write_scalars(step, {"eval/em/fid": fid})
        writer.close()
    records = read_metrics(str(tmp_path), jsonl="eval/metrics.jsonl")
    assert [(r["step"], r["eval/em/fid"]) for r in records] == [(20, 4.0), (10, 3.0)]


def test_corrupt_eval_progress_redoes_only_what_is_unreadable(tmp_path, caplog):
    from gl_jax.eval.progress import Progress

    folder = str(tmp_path / "progress")
    progress = Progress(folder, {"setting": "a"})
    for i in range(3):
        progress.save(i, {"pool": np.full((2, 2), float(i))}, seconds=float(i))
    path = os.path.join(folder, "batch_000001.npz")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)  # In the array's bytes: the zip member's CRC no longer matches.
        f.write(b"\xff" * 8)
    with caplog.at_level(logging.WARNING):
        resumed = Progress(folder, {"setting": "a"})
    assert resumed.done == 1 and "corrupt" in caplog.text
    with open(os.path.join(folder, "state.json"), "w") as f:
        f.write("{not json")
    with caplog.at_level(logging.WARNING):
        fresh = Progress(folder, {"setting": "a"})
    assert fresh.done == 0 and "state.json is corrupt" in caplog.text


def test_corrupt_reference_statistics_are_set_aside_and_recomputed(tmp_path, data_dir, caplog):
    from gl_jax.eval.reference import compute_stats
    from tests.conftest import load_config

    config = load_config("toy_vp", "smoke")
    config.data.data_dir = data_dir
    config.stats.path = str(tmp_path / "stats.npz")
    first = compute_stats(config)
    data = bytearray((tmp_path / "stats.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "stats.npz").write_bytes(bytes(data[: len(data) - 100]))
    with caplog.at_level(logging.WARNING):
        again = compute_stats(config)
    assert "unreadable" in caplog.text and (tmp_path / "stats.npz.corrupt").exists()
    np.testing.assert_array_equal(again.stats.mu, first.stats.mu)
    np.testing.assert_array_equal(again.features, first.features)


def test_a_data_position_of_another_pipeline_is_one_error_naming_the_fix():
    from gl_jax.train.checkpoint import CheckpointError
    from gl_jax.train.loop import set_data_position

    class Iterator:
        def set_state(self, state):
            raise KeyError("next_index")

    with pytest.raises(CheckpointError, match=r"data position saved with step 7 .*config that wrote the run"):
        set_data_position(Iterator(), {"bad": 1}, 7, "/run/checkpoints")
