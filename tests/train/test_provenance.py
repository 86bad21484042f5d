"""Every file of generated samples says where it came from, and a sample file is drawn again, bitwise, from
its record: step pictures, `--mode sample`'s picture and `.npz`, the eval report and its pictures."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from gl_jax import files
from gl_jax.eval.evaluate import evaluate
from gl_jax.eval.sample import regenerate, sample
from gl_jax.train import provenance
from gl_jax.train.loop import train_and_evaluate
from tests.conftest import REPO, load_config


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """A toy run (20 steps), sampled once and evaluated once (64 samples, no likelihood)."""
    workdir = tmp_path_factory.mktemp("provenance_run")
    config = load_config("toy_vp", "smoke")
    config.data.data_dir = data_dir
    config.sample.steps = 8
    config.eval.num_samples, config.eval.batch_size, config.eval.bpd_examples = 64, 64, 0
    config.stats.path = str(workdir / "stats.npz")
    train_and_evaluate(config, str(workdir))
    samples = sample(config, str(workdir))
    evaluate(config, str(workdir))
    return workdir, config, samples


def test_every_file_kind_carries_its_record(run):
    workdir, config, _ = run
    paths = {
        "step picture": workdir / "samples" / "step_0000020.png",
        "sample": workdir / "samples" / "sample_0000020_001.png",
        "eval report": workdir / "eval" / "report.json",
        "eval picture": next((workdir / "eval").glob("*.png")),
    }
    for kind, path in paths.items():
        record = provenance.read(path)
        assert record["kind"] == kind, (path, record["kind"])
        assert record["checkpoint_step"] == 20 and record["workdir"] == str(workdir)
        assert record["config"] == files.canonical(config)
        want = hashlib.sha256(json.dumps(record["config"], sort_keys=True).encode()).hexdigest()
        assert record["config_sha256"] == want
        assert {"jax", "flax", "numpy"} <= set(record["packages"]) and record["gl_jax_version"]
        if path.suffix == ".png":  # The sidecar holds the same record as the PNG's text chunk.
            assert provenance.read(provenance.sidecar_path(path)) == record
    npz = provenance.read(workdir / "samples" / "sample_0000020_001.npz")
    assert npz["kind"] == "sample" and npz["key"] == provenance.read(paths["sample"])["key"]
    assert npz["num_samples"] == config.sample.num_samples and npz["sampler"]["steps"] == 8


def test_a_sample_file_regenerates_bitwise_from_its_record(run):
    workdir, _, samples = run
    path = workdir / "samples" / "sample_0000020_001.npz"
    with np.load(path) as f:
        saved = f["samples"]
    np.testing.assert_array_equal(saved, samples)
    again = regenerate(provenance.read(path))
    assert again.dtype == saved.dtype
    np.testing.assert_array_equal(again, saved)


def test_info_mode_prints_the_record_and_refuses_a_file_without_one(run, tmp_path):
    workdir, _, _ = run
    cli = [sys.executable, "-m", "gl_jax.main", "--mode", "info", "--file"]
    path = workdir / "samples" / "sample_0000020_001.png"
    proc = subprocess.run([*cli, str(path)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == provenance.read(path)
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    proc = subprocess.run([*cli, str(plain)], capture_output=True, text=True, timeout=120, cwd=REPO)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "carries no gl_jax provenance record" in last, last
