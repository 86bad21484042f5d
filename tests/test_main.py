"""The `gl-jax` command line: a run end to end, and bad input answered with one clear line."""

import os
import subprocess
import sys

import pytest

from gl_jax.models import build_model
from tests.conftest import REPO

TOY = str(REPO / "experiments" / "toy_vp.py") + ":smoke"


def _cli(*args, data_dir, **env_vars):
    env = {**os.environ, "TFDS_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu", **env_vars}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "gl_jax.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def test_cli_train_then_sample(tmp_path, data_dir):
    # The CLI keeps JAX's persistent compilation cache in $GL_JAX_CACHE/jax (every compilation, here).
    cache = {"GL_JAX_CACHE": str(tmp_path / "cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    run = tmp_path / "run"
    proc = _cli("--config", TOY, "--workdir", str(run), "--config.optim.lr=5e-4", data_dir=data_dir, **cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step/s" in proc.stderr  # The progress bar shows the rate.
    assert len(os.listdir(tmp_path / "cache" / "jax")) >= 2  # At least the init and the train step.
    proc = _cli("--config", TOY, "--workdir", str(run), "--mode", "sample", data_dir=data_dir, **cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "samples" / "samples.npz").exists()


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
