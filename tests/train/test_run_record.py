"""A run records its config: `run.json` is written when training starts, readers refuse a config that would
read the checkpoint as another model and apply the rest, and `gl_jax.load_run` rebuilds the run from it."""

import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gl_jax
from gl_jax.eval.sample import sample
from gl_jax.train.checkpoint import CheckpointError
from gl_jax.train.loop import train_and_evaluate
from gl_jax.train.run_record import check_config_matches, read_record
from tests.conftest import load_config


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("toy_run")
    config = load_config("toy_vp", "smoke")  # 20 steps, checkpoints at 10 and 20.
    config.data.data_dir = data_dir
    config.sample.steps = 4
    state = train_and_evaluate(config, str(workdir))
    return str(workdir), config, state


def test_training_writes_the_resolved_config_spec_and_command(toy_run):
    workdir, config, _ = toy_run
    raw = json.loads(open(f"{workdir}/run.json").read())
    assert raw["version"] == gl_jax.__version__ and isinstance(raw["command"], list)
    record = read_record(workdir)
    # JSON's lists come back as the config's tuples (the only sequence a --config.<key> override sets).
    assert record.config.sample.steps == 4 and record.config.model.features == (32, 32)
    assert record.spec.name == "toy/gmm_2d" and record.spec.shape == (2,) and record.spec.kind == "vector"


def test_a_tuple_of_the_saved_config_takes_a_command_line_override(toy_run):
    workdir, _, _ = toy_run
    proc = subprocess.run(
        [sys.executable, "-m", "gl_jax.main", "--workdir", workdir, "--print_config",
         "--config.eval.posthoc_sigma_rels=(0.05, 0.2)"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "posthoc_sigma_rels: !!python/tuple\n  - 0.05\n  - 0.2\n" in proc.stdout, proc.stdout[-3000:]


def test_a_reader_refuses_another_meaning_and_applies_other_changes(toy_run, caplog):
    workdir, config, _ = toy_run
    other = load_config("toy_vp", "smoke")
    other.data.data_dir = config.data.data_dir
    other.sde.beta_max = 5.0  # Another process: the network's outputs would be read as another score.
    with pytest.raises(
        ValueError, match=r"config\.sde=.*\"beta_max\": 5\.0.*trained with config\.sde=.*20\.0"
    ):
        sample(other, workdir)
    other.sde.beta_max = 20.0
    other.loss.prediction = "x0"
    with pytest.raises(ValueError, match=r"config\.loss\.prediction=\"x0\" differs.*\"eps\""):
        check_config_matches(other, read_record(workdir).config, workdir=workdir)
    other.loss.prediction = "eps"
    other.sample.steps = 2  # A sampler setting: applied, and said.
    with caplog.at_level(logging.INFO, logger="gl_jax"):
        samples = sample(other, workdir)
    assert samples.shape == (64, 2)
    assert "config.sample.steps" in caplog.text


def test_load_run_gives_the_config_family_parameters_score_and_sampler(toy_run):
    workdir, config, state = toy_run
    run = gl_jax.load_run(workdir)
    assert run.step == 20 and run.config.sample.steps == 4 and run.sde.beta_max == 20.0
    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(state.ema_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    raw = gl_jax.load_run(workdir, ema=False, step=10)
    assert raw.step == 10
    x = run.sample(jax.random.key(0), 8)
    assert x.shape == (8, 2) and np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_array_equal(x, run.sample(jax.random.key(0), 8))  # A function of the key.
    # The score is the family's, with these parameters: the same numbers as through the family.
    t = jnp.full((8,), 0.5)
    np.testing.assert_allclose(run.score_fn(x, t), run.family.score_fn(run.params)(x, t), rtol=1e-6)
    with pytest.raises(CheckpointError, match=r"No checkpoint of step 15 .*\[10, 20\]"):
        gl_jax.load_run(workdir, step=15)


def test_load_run_of_a_folder_without_a_record_says_why(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match=r"run\.json is missing.*Experiment"):
        gl_jax.load_run(str(tmp_path))


def test_a_damaged_record_is_set_aside_and_written_again_by_training(toy_run, tmp_path):
    import shutil

    workdir, config, _ = toy_run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(".gl_jax.lock"))
    with open(f"{copy}/run.json", "r+b") as f:
        f.seek(5)
        f.write(b"\x00\xff")  # Flipped bytes: not JSON any more.
    assert read_record(copy) is None  # A reader warns and goes on without the check.
    train_and_evaluate(config, copy)  # The finished run starts, sets the record aside and writes it anew.
    assert read_record(copy).config.sample.steps == 4
    assert (tmp_path / "run" / "run.json.corrupt").exists()


def test_each_sample_call_writes_new_files_with_its_own_key(toy_run):
    import glob

    workdir, config, _ = toy_run
    first, second = sample(config, workdir), sample(config, workdir)
    stems = sorted(glob.glob(f"{workdir}/samples/sample_0000020_*.npz"))
    assert [s[-7:-4] for s in stems][-2:] == [f"{n:03d}" for n in (len(stems) - 1, len(stems))]
    assert not np.allclose(first, second)  # Drawn with keys of (step, n): new samples, none overwritten.
    again = np.load(stems[-1])["samples"]
    np.testing.assert_array_equal(again, second)


def test_scatter_limits_follow_the_bulk_not_the_outliers():
    from gl_jax.plots import scatter_limits

    points = np.random.default_rng(0).normal(size=(1000, 2))
    points[:5] = 200.0  # A diverging sampler's few far samples.
    points[5] = np.nan
    low, high = scatter_limits(points)
    assert np.all(low > -5) and np.all(high < 5) and np.all(low < -1.5) and np.all(high > 1.5)


def test_captioned_picture_shows_data_and_samples_pixel_for_pixel():
    from gl_jax.plots import captioned_grids, image_grid

    rng = np.random.default_rng(0)
    data, samples = rng.uniform(-1, 1, size=(2, 16, 8, 8, 1))
    picture = captioned_grids(
        [("data", data), ("samples", samples)], caption="step 7 | ddim, 5 steps", scale=3
    )
    assert picture.dtype == np.uint8 and picture.shape[-1] == 3
    for i, images in enumerate((data, samples)):
        grid = np.repeat(np.repeat(image_grid(images)[..., 0], 3, axis=0), 3, axis=1)  # [111, 111]
        top, left = 40, 12 + i * (grid.shape[1] + 12)  # Two 20-pixel text lines; 12-pixel gaps.
        np.testing.assert_array_equal(
            picture[top : top + grid.shape[0], left : left + grid.shape[1], 0], grid
        )
    assert (picture[:20] < 128).any()  # The caption is drawn in the top line.


def test_tensorboard_holds_curves_pictures_config_and_hparams(tmp_path, data_dir):
    from PIL import Image

    from gl_jax.train.writers import read_metrics, read_tensorboard

    config = load_config("digits_vp", "smoke")
    config.data.data_dir = data_dir
    config.train.num_steps, config.train.log_every, config.train.eval_every = 20, 10, 10
    # EMA decay 1: the sampling parameters stay the initial ones, so with the same noise at every eval the
    # pictures of steps 10 and 20 show the same samples (only the caption differs).
    config.train.ema_decay = 1.0
    config.optim.warmup_steps = 100  # A learning rate that changes from log to log.
    train_and_evaluate(config, str(tmp_path))
    tags = read_tensorboard(str(tmp_path / "tensorboard"))
    kinds = {tag: {kind for _, kind in events} for tag, events in tags.items()}
    for tag in ("loss", "grad_norm", "steps_per_sec", "learning_rate", "skipped_updates", "compile_seconds"):
        assert kinds[f"train/{tag}"] == {"scalar"}, tag
    assert kinds["eval/loss"] == {"scalar"} and kinds["eval/samples"] == {"image"}
    assert [step for step, _ in tags["eval/samples"]] == [10, 20]  # A picture at every eval.
    assert any(kind == {"text"} for tag, kind in kinds.items() if tag.startswith("config"))
    assert any(kind == {"hparams"} for kind in kinds.values())
    # Compile time is its own record at the start step; the learning rate is the warm-up's.
    records = read_metrics(str(tmp_path))
    assert records[0]["step"] == 0 and set(records[0]) == {"step", "train/compile_seconds"}
    rates = {r["step"]: r["train/learning_rate"] for r in records if "train/learning_rate" in r}
    first, last = (np.asarray(Image.open(tmp_path / "samples" / f"step_{s:07d}.png")) for s in (10, 20))
    assert first.shape == last.shape
    np.testing.assert_array_equal(first[20:], last[20:])
    assert (first[:20] != last[:20]).any()  # "step 10" and "step 20".
    lr = config.optim.lr
    np.testing.assert_allclose([rates[10], rates[20]], [lr * 9 / 100, lr * 19 / 100], rtol=1e-5)
