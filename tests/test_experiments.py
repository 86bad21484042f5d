"""Every experiment config's smoke variant trains, checkpoints, logs, draws pictures, and samples."""

import json
import os

import numpy as np
import pytest

from gl_jax.eval.sample import sample
from gl_jax.train.loop import train_and_evaluate
from tests.conftest import load_config

needs_fashion = pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="needs Debian's dataset-fashion-mnist, which .ci/run installs",
)


@pytest.mark.parametrize(
    # fashion_mnist_vp's smoke run repeats digits_vp's on larger images: slow, run with -m slow.
    "name",
    [
        # toy_vp's smoke variant is trained through the command by tests/reliability and tests/test_main.py.
        pytest.param("toy_vp", marks=pytest.mark.slow),
        # digits_vp is the README's main job, run in full by `make demo`; its smoke variant is slow here.
        pytest.param("digits_vp", marks=pytest.mark.slow),
        "digits_dit",
        # The recipes of EDM2's network and post-hoc EMA, and OT flow matching; their parts have their own
        # tests (tests/models/test_edm2_unet.py, tests/train/test_posthoc_loop.py, tests/losses).
        pytest.param("digits_edm2", marks=pytest.mark.slow),
        pytest.param("digits_phema", marks=pytest.mark.slow),
        pytest.param("toy_flow", marks=pytest.mark.slow),
        pytest.param("digits_weighting", marks=pytest.mark.slow),
        # The few-step families through the loop (tests/families/test_few_step.py trains toy_cd from a
        # teacher run in the default run).
        pytest.param("toy_cd", marks=pytest.mark.slow),
        pytest.param("toy_ct", marks=pytest.mark.slow),
        pytest.param("toy_pd", marks=pytest.mark.slow),
        pytest.param("digits_pd", marks=pytest.mark.slow),
        pytest.param("fashion_mnist_vp", marks=[needs_fashion, pytest.mark.slow]),
    ],
)
def test_smoke_variant_trains_and_samples(name, tmp_path, data_dir):
    config = load_config(name, "smoke")
    config.data.data_dir = data_dir
    state = train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == config.train.num_steps
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses and all(np.isfinite(losses))
    assert any("eval/loss" in r for r in records)
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    assert (tmp_path / "samples" / f"step_{config.train.num_steps:07d}.png").exists()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())[-1] == (
        config.train.num_steps
    )

    samples = sample(config, str(tmp_path))
    assert samples.shape[0] == config.sample.num_samples and np.all(np.isfinite(samples))
    assert len(list((tmp_path / "samples").glob("sample_*_001.png"))) == 1
    assert len(list((tmp_path / "samples").glob("sample_*_001.npz"))) == 1


def test_all_configs_load():
    from gl_jax.train.validation import check_config

    names = (
        "toy_vp",
        "digits_vp",
        "digits_dit",
        "fashion_mnist_vp",
        "digits_edm2",
        "digits_phema",
        "toy_flow",
        "digits_weighting",
        "digits_guidance",
        *(f"{data}_{method}" for data in ("toy", "digits", "fashion_mnist") for method in ("cd", "ct", "pd")),
    )
    for name in names:
        for variant in ("", "smoke"):
            config = load_config(name, variant)
            assert config.train.num_steps % config.train.steps_per_call == 0
            for mode in ("train", "eval"):
                check_config(config, mode=mode)
    with pytest.raises(ValueError, match="Unknown variant"):
        load_config("digits_vp", "huge")
