"""benchmarks/cpu_recipe.py: training minutes from a run's metrics, FID per step, its one-line failure."""

import json
import subprocess

import pytest

from benchmarks import cpu_recipe


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_training_minutes_add_the_compilation_and_each_interval_at_its_rate(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(
        path,
        [
            {"step": 0, "train/compile_seconds": 30.0},
            {"step": 100, "train/steps_per_sec": 2.0, "train/loss": 1.0},  # 50 s.
            {"step": 100, "eval/x": 1.0},  # No rate: not an interval.
            {"step": 300, "train/steps_per_sec": 0.5},  # 400 s.
            # A resumed run compiles again, then goes on from its checkpoint.
            {"step": 300, "train/compile_seconds": 20.0},
            {"step": 400, "train/steps_per_sec": 1.0},  # 100 s.
        ],
    )
    minutes = cpu_recipe.training_minutes(str(path))
    assert minutes == pytest.approx({0: 0.5, 100: 80 / 60, 300: 480 / 60, 400: 600 / 60})


def test_fid_by_step_keeps_each_steps_newest_record_and_every_setting(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(
        path,
        [
            {"step": 600, "eval/heun/fid": 60.0, "eval/heun/kid_mean": 0.01},
            {"step": 1200, "eval/heun/fid": 40.0, "eval/dpm/fid": 42.0},
            {"step": 600, "eval/heun/fid": 55.0, "eval/dpm/fid": 57.0},
        ],
    )
    assert cpu_recipe.fid_by_step(str(path)) == {
        600: {"heun": 55.0, "dpm": 57.0},
        1200: {"heun": 40.0, "dpm": 42.0},
    }
    table = cpu_recipe.table([(600, 13.4, {"heun": 55.0, "dpm": 57.0})])
    assert table.splitlines()[-1] == "| 600 | 13.4 | 57.0 | 55.0 | 55.0 (heun) |"


def test_a_failed_evaluation_stops_with_one_line_naming_the_step(tmp_path, monkeypatch):
    (tmp_path / "checkpoints" / "600").mkdir(parents=True)
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, 1))
    with pytest.raises(SystemExit) as info:
        cpu_recipe.main(["--workdir", str(tmp_path)])
    message = str(info.value)
    assert "\n" not in message and "evaluation of step 600 exited with status 1" in message


def test_main_writes_the_table_and_a_picture_with_one_curve_per_setting(tmp_path, monkeypatch):
    from PIL import Image

    _write(
        tmp_path / "metrics.jsonl",
        [{"step": 0, "train/compile_seconds": 60.0}, {"step": 600, "train/steps_per_sec": 1.0}],
    )
    (tmp_path / "eval").mkdir()
    _write(tmp_path / "eval" / "metrics.jsonl", [{"step": 600, "eval/heun/fid": 55.0, "eval/dpm/fid": 57.0}])
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: pytest.fail("step 600 is evaluated already"))
    picture = tmp_path / "copy.png"
    cpu_recipe.main(["--workdir", str(tmp_path), "--floor", "29.6", "--picture", str(picture)])
    table = (tmp_path / "eval" / "fid_vs_minutes.md").read_text().splitlines()
    assert table[-1] == "| 600 | 11.0 | 57.0 | 55.0 | 55.0 (heun) |"  # 1 min compiling + 600 s.
    with Image.open(picture) as image:
        assert image.format == "PNG" and min(image.size) > 200
    # Written atomically: no temporary file is left beside them.
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "fid_vs_minutes.md",
        "fid_vs_minutes.png",
        "metrics.jsonl",
    ]


def test_title_names_the_picture_and_defaults_to_the_workdir(tmp_path, monkeypatch):
    run = tmp_path / "run_a"
    (run / "eval").mkdir(parents=True)
    _write(run / "metrics.jsonl", [{"step": 600, "train/steps_per_sec": 1.0}])
    _write(run / "eval" / "metrics.jsonl", [{"step": 600, "eval/heun/fid": 55.0}])
    titles = []
    monkeypatch.setattr(cpu_recipe.plots, "save_curves", lambda *a, title, **kw: titles.append(title))
    cpu_recipe.main(["--workdir", str(run)])
    cpu_recipe.main(["--workdir", str(run), "--title", "fashion_mnist_edm"])
    assert titles == ["run_a", "fashion_mnist_edm"]
