"""The `gl-jax` command line: a run end to end, and bad input answered with one clear line."""

import os
import subprocess
import sys

import pytest

from gl_jax.models import build_model
from tests.conftest import REPO

TOY = str(REPO / "experiments" / "toy_vp.py") + ":smoke"


def _cli(*args, data_dir, cwd=REPO, **env_vars):
    env = {**os.environ, "TFDS_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu", **env_vars}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "gl_jax.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def test_cli_train_then_sample(tmp_path, data_dir):
    # The CLI keeps JAX's persistent compilation cache in $GL_JAX_CACHE/jax (every compilation, here).
    cache = {"GL_JAX_CACHE": str(tmp_path / "cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    run = tmp_path / "run"
    # A packaged config by name, from a folder that is not the repository.
    proc = _cli(
        "--config", "toy_vp:smoke", "--workdir", str(run), "--config.optim.lr=5e-4",
        data_dir=data_dir, cwd=tmp_path, **cache,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step/s" in proc.stderr  # The progress bar shows the rate.
    assert len(os.listdir(tmp_path / "cache" / "jax")) >= 2  # At least the init and the train step.
    # Without --config: the run's saved config (its lr, not the file's), with an override applied.
    proc = _cli("--workdir", str(run), "--print_config", "--config.sample.steps=7", data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(run / "run.json") in proc.stdout.splitlines()[0]
    assert "  lr: 0.0005" in proc.stdout and "  steps: 7" in proc.stdout
    sample = ("--workdir", str(run), "--mode", "sample")
    proc = _cli(*sample, "--config.sample.steps=7", data_dir=data_dir, **cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((run / "samples").glob("sample_*_001.npz"))) == 1
    # An override that changes what the checkpoint means is refused, with the fix.
    proc = _cli(*sample, "--config.sde.beta_max=5", data_dir=data_dir)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "config.sde=" in last and "run.json" in last, last


def test_config_names_and_a_missing_config_are_one_line(tmp_path, data_dir):
    proc = _cli("--config", "toy_pv:smoke", "--print_config", data_dir=data_dir)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "'toy_pv'" in last and "Did you mean 'toy_vp'" in last, last
    proc = _cli("--workdir", str(tmp_path), "--mode", "sample", data_dir=data_dir)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "--config is missing" in last and "has no run.json" in last, last
    # The dotted module name works as well as the bare name.
    proc = _cli("--config", "gl_jax.experiments.digits_vp:smoke", "--print_config", data_dir=data_dir)
    assert proc.returncode == 0 and "name: sklearn_digits" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "override, named, nearest",
    [("--config.optim.lrr=1e-3", "lrr", "lr"), ("--config.trian.num_steps=3", "trian", "train")],
)
def test_unknown_config_key_names_nearest(tmp_path, data_dir, override, named, nearest):
    proc = _cli("--config", TOY, "--workdir", str(tmp_path), override, data_dir=data_dir)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert named in last and f'"{nearest}"' in last, last


def test_unknown_model_key_names_nearest():
    with pytest.raises(ValueError, match=r"config.model.channls.*did you mean 'config.model.channels'"):
        build_model("small_unet", {"channls": 3})
    with pytest.raises(ValueError, match="Did you mean 'mlp'"):
        build_model("mpl", {})


def test_missing_dataset_is_one_line(tmp_path, data_dir):
    proc = _cli("--config", TOY, "--workdir", str(tmp_path), "--config.data.name=cifar10", data_dir=data_dir)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "tfds build cifar10" in proc.stderr.strip().splitlines()[-1]


def test_sample_without_checkpoint_says_train_first(tmp_path, data_dir):
    proc = _cli("--config", TOY, "--workdir", str(tmp_path), "--mode", "sample", data_dir=data_dir)
    assert proc.returncode != 0 and "--mode train" in proc.stderr.strip().splitlines()[-1]


def test_help_lists_every_flag_and_mode_with_an_example(data_dir):
    from absl import flags

    from gl_jax import main

    proc = _cli("--help", data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "helpfull" not in proc.stdout.splitlines()[0] and "Try --helpfull" not in proc.stdout
    main._define_flags()
    for flag in flags.FLAGS.get_flags_for_module("gl_jax.main"):
        lines = [line for line in proc.stdout.splitlines() if line.split()[:1] == [f"--{flag.name}"]]
        assert len(lines) == 1, (flag.name, proc.stdout)
    lines = proc.stdout.splitlines()
    for mode in ("train", "sample", "stats", "eval"):
        i = next(i for i, line in enumerate(lines) if line.split()[:1] == [mode])
        example = lines[i + 1].split()  # The mode's example command, on the line below its description.
        assert example[0] == "gl-jax" and {"--config", "--workdir"} & set(example), lines[i + 1]
        assert mode == "train" or example[example.index("--mode") + 1] == mode, lines[i + 1]
    from gl_jax.experiments import names

    listed = proc.stdout.split("configs (NAME):", 1)[1].replace(",", " ").split()
    assert listed == names() and "toy_vp" in listed
    # -h is the same help, with or without a config.
    assert _cli("-h", "--config", TOY, data_dir=data_dir).stdout == proc.stdout


def test_print_config_prints_the_overridden_config_and_exits(tmp_path, data_dir):
    # No workdir is needed and none is made; no data is read (an unprepared data_dir stays empty).
    empty = tmp_path / "data"
    empty.mkdir()
    proc = _cli("--config", TOY, "--print_config", "--config.optim.lr=5e-4", data_dir=str(empty))
    assert proc.returncode == 0, proc.stderr[-3000:]
    optim = proc.stdout.split("\noptim:\n", 1)[1].split("\n")
    assert "  lr: 0.0005" in optim[: optim.index(next(line for line in optim if not line.startswith(" ")))]
    assert list(empty.iterdir()) == []
    bad = _cli("--config", TOY, "--print_config", "--config.optim.lr=-1", data_dir=str(empty))
    assert bad.returncode == 1 and "config.optim.lr=-1.0 is invalid" in bad.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "override, nearest",
    [
        ("--config.optim.learning_rate=1e-3", "--config.optim.lr"),  # An abbreviation, not a misspelling.
        ("--config.train.lr=1e-3", "--config.optim.lr"),  # The key is in another section.
        ("--config.sde.beta_mx=5", "--config.sde.beta_max"),
        ("--config.optim.lr.x=1", "--config.optim.lr="),  # Below a value.
    ],
)
def test_every_unknown_config_key_names_the_nearest_valid_one(tmp_path, data_dir, override, nearest):
    proc = _cli("--config", TOY, "--workdir", str(tmp_path), override, data_dir=data_dir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("gl-jax:")]
    assert len(lines) == 1, proc.stderr
    key = override.split("=")[0].rsplit(".", 1)[1]
    assert lines[0].startswith(f"gl-jax: error: unknown config key '{key}'. Did you mean"), lines[0]
    assert f"({nearest}" in lines[0], lines[0]
