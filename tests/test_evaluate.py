"""`--mode stats` and `--mode eval`: cached reference statistics, a report from a trained digits run, exact
resumption after SIGKILL, and bad input answered with one clear line.

The runs are tiny (the digits smoke config: 16 reference images, 2 batches of 16 samples), since the FID
Inception takes ~0.2 s per image on a small CPU. The subprocesses share a persistent compilation cache, so
only the first one compiles the sampler and the Inception network.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gl_jax.eval.frechet import frechet_distance, gaussian_statistics
from tests.conftest import REPO, load_config
from tests.eval.conftest import require_torchscript_weights

DIGITS = str(REPO / "experiments" / "digits_vp.py") + ":smoke"
METRICS = ("nfe", "fid", "kid_mean", "kid_std", "precision", "recall", "bits_per_dim", "num_samples")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Converted Inception weights (`$GL_JAX_CACHE`) and a compilation cache for the subprocesses."""
    from gl_jax.eval.convert_inception import convert_and_cache

    folder = tmp_path_factory.mktemp("gl_jax_cache")
    convert_and_cache(require_torchscript_weights(), cache_path=folder / "inception_fid.msgpack")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A digits smoke run trained for 2 steps (its checkpoint is what `--mode eval` reads)."""
    from gl_jax.train.loop import train_and_evaluate

    workdir = tmp_path_factory.mktemp("digits_run")
    config = load_config("digits_vp", "smoke")
    config.data.data_dir = data_dir
    config.train.num_steps = 2
    config.train.steps_per_call = 1
    config.train.log_every = 2
    config.train.checkpoint_every = 2
    train_and_evaluate(config, str(workdir))
    return workdir


def _env(cache, data_dir):
    return {
        **os.environ,
        "TFDS_DATA_DIR": data_dir,
        "JAX_PLATFORMS": "cpu",
        "GL_JAX_CACHE": str(cache),
        "JAX_COMPILATION_CACHE_DIR": str(cache / "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def _args(mode, workdir, stats):
    args = ["-m", "gl_jax.main", "--config", DIGITS, "--mode", mode, f"--config.stats.path={stats}"]
    args += ["--config.stats.max_images=16"]
    return args + (["--workdir", str(workdir)] if workdir else [])


def _cli(mode, workdir, stats, *, cache, data_dir):
    return subprocess.run(
        [sys.executable, *_args(mode, workdir, stats)],
        env=_env(cache, data_dir),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def _copy_run(trained, path):
    shutil.copytree(trained / "checkpoints", path / "checkpoints")
    return path


@pytest.fixture(scope="module")
def reference_eval(tmp_path_factory, trained, cache, data_dir):
    """An uninterrupted evaluation, whose reference statistics are computed on the fly."""
    workdir = _copy_run(trained, tmp_path_factory.mktemp("eval_ref"))
    stats = workdir / "stats.npz"
    proc = _cli("eval", workdir, stats, cache=cache, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, stats, proc


def test_stats_mode_writes_dataset_statistics_and_reuses_them(tmp_path, cache, data_dir):
    from gl_jax.data.pipeline import load_arrays, make_dataset
    from gl_jax.data.sources import open_dataset
    from gl_jax.eval import reference
    from gl_jax.eval.features import dataset_statistics, inception_extractor
    from gl_jax.eval.inception_weights import load_inception_params

    stats = tmp_path / "digits_stats.npz"
    proc = _cli("stats", None, stats, cache=cache, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(stats) in proc.stdout and stats.exists()
    assert "img/s" in proc.stderr  # The progress bar shows the rate.

    # The same images, batches and network, through `dataset_statistics` directly.
    config = load_config("digits_vp", "smoke")
    config.data.data_dir = data_dir
    config.stats.path, config.stats.max_images = str(stats), 16
    spec, sources = open_dataset(config.data.name, data_dir=data_dir)
    arrays = {k: v[:16] for k, v in load_arrays(sources["train"], spec).items()}
    batches = make_dataset(
        arrays, spec, batch_size=16, seed=0, shuffle=False, repeat=False, drop_remainder=False
    )
    extractor = inception_extractor(load_inception_params(cache / "inception_fid.msgpack"), batch_size=16)
    want = dataset_statistics(iter(batches), extractor=extractor)
    with np.load(stats) as f:
        assert int(f["num"]) == want.num == 16 and f["features"].shape == (16, 2048)
        np.testing.assert_allclose(f["mu"], want.mu, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(f["sigma"], want.sigma, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(gaussian_statistics(f["features"]).sigma, want.sigma, rtol=1e-4, atol=1e-7)

    def exploding(images):
        raise AssertionError("the cached statistics should have been reused")

    again = reference.compute_stats(config, extractor=exploding)
    assert again.path == str(stats) and again.stats.num == 16
    with np.load(stats) as f:
        np.testing.assert_array_equal(again.stats.sigma, f["sigma"])


def test_eval_writes_report_and_grids(reference_eval):
    workdir, stats, proc = reference_eval
    assert stats.exists()  # Computed on the fly: it was missing.
    assert "sample/s" in proc.stderr and str(workdir / "eval" / "report.json") in proc.stdout
    report = json.loads((workdir / "eval" / "report.json").read_text())
    assert report["checkpoint_step"] == 2 and report["use_ema"] is True
    entry = report["settings"]["em_10"]
    assert entry["sampler"] == "euler_maruyama" and entry["steps"] == 10 and entry["nfe"] == 10
    assert entry["num_samples"] == 32 and entry["checkpoint_step"] == 2 and entry["seconds"] > 0
    for name in ("fid", "kid_mean", "kid_std", "precision", "recall", "bits_per_dim"):
        assert np.isfinite(entry[name]), (name, entry)
    assert entry["fid"] > 0 and 0 <= entry["precision"] <= 1 and 0 <= entry["recall"] <= 1
    assert "inception_score" not in entry  # The converted weights have no softmax head.
    bpd = report["bits_per_dim"]
    assert bpd["examples"] == 8 and bpd["nfe"] > 0 and 0 < bpd["bits_per_dim"] < 64
    assert (workdir / "eval" / "em_10.png").stat().st_size > 200
    # The numbers at the checkpoint's step, as curves beside training's.
    from gl_jax.train.writers import read_metrics, read_tensorboard

    (record,) = read_metrics(str(workdir), jsonl="eval/metrics.jsonl")
    assert record["step"] == 2 and record["eval/em_10/fid"] == entry["fid"]
    assert record["eval/bits_per_dim"] == bpd["bits_per_dim"]
    tags = read_tensorboard(str(workdir / "tensorboard" / "eval"))
    assert tags["eval/em_10/fid"] == [(2, "scalar")] and tags["eval/em_10/samples"] == [(2, "image")]


@pytest.mark.slow
def test_eval_on_four_devices_gives_the_same_numbers(tmp_path, reference_eval, trained, cache, data_dir):
    # The samples are spread over a 4-device mesh, each drawn from its own key: the same samples, so the
    # same FID, KID, precision and recall as on one device.
    ref_dir, stats, _ = reference_eval
    workdir = _copy_run(trained, tmp_path / "run")
    env = {**_env(cache, data_dir), "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run(
        [sys.executable, *_args("eval", workdir, stats)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = json.loads((ref_dir / "eval" / "report.json").read_text())["settings"]["em_10"]
    got = json.loads((workdir / "eval" / "report.json").read_text())["settings"]["em_10"]
    for name in ("fid", "kid_mean", "kid_std", "precision", "recall", "nfe", "num_samples"):
        assert got[name] == want[name], (name, got[name], want[name])


@pytest.mark.slow  # ~50 s on 2 cores.
def test_eval_resumes_after_sigkill_with_the_same_numbers(tmp_path, reference_eval, trained, cache, data_dir):
    ref_dir, stats, _ = reference_eval
    workdir = _copy_run(trained, tmp_path / "run")
    state = workdir / "eval" / "progress" / "settings" / "em_10" / "state.json"
    proc = subprocess.Popen(
        [sys.executable, *_args("eval", workdir, stats)],
        env=_env(cache, data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    start = time.time()
    while not state.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - start < 300, "no progress was saved"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(state.read_text())["done"] == 1  # Killed between the two batches.
    assert not (workdir / "eval" / "report.json").exists()

    rerun = _cli("eval", workdir, stats, cache=cache, data_dir=data_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    want = json.loads((ref_dir / "eval" / "report.json").read_text())
    got = json.loads((workdir / "eval" / "report.json").read_text())
    for name in METRICS:
        assert got["settings"]["em_10"][name] == want["settings"]["em_10"][name], name
    assert got["bits_per_dim"]["bits_per_dim"] == want["bits_per_dim"]["bits_per_dim"]


def test_eval_of_an_earlier_checkpoint_keeps_the_newest_report(tmp_path, cache, data_dir, monkeypatch):
    # FID over training: each evaluated step has its own report and a record in eval/metrics.jsonl.
    from gl_jax.eval import evaluate
    from gl_jax.train.checkpoint import CheckpointError
    from gl_jax.train.loop import train_and_evaluate

    monkeypatch.setenv("GL_JAX_CACHE", str(cache))
    config = load_config("digits_vp", "smoke")
    config.data.data_dir = data_dir
    config.train.num_steps, config.train.steps_per_call, config.train.checkpoint_every = 2, 1, 1
    train_and_evaluate(config, str(tmp_path))
    config.stats.path, config.stats.max_images = str(tmp_path / "stats.npz"), 16
    config.eval.num_samples, config.eval.batch_size, config.eval.bpd_examples = 8, 8, 0
    # The parameters each evaluation samples with (digits' 17 levels can hide a small change in the FID).
    used = []
    sampling_params = evaluate.Experiment.sampling_params
    monkeypatch.setattr(
        evaluate.Experiment,
        "sampling_params",
        lambda self, state: used.append(sampling_params(self, state)) or used[-1],
    )
    reports = {}
    for step in (1, -1):
        config.eval.checkpoint_step = step
        reports[step] = evaluate.evaluate(config, str(tmp_path))
        folder = tmp_path / evaluate.report_folder(config)
        assert json.loads((folder / "report.json").read_text()) == json.loads(json.dumps(reports[step]))
    assert evaluate.report_folder(config) == "eval"
    assert (tmp_path / "eval" / "step_1" / "report.json").exists()
    assert [reports[s]["checkpoint_step"] for s in (1, -1)] == [1, 2]
    differ = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), used[0], used[1]))
    assert any(differ)  # The earlier checkpoint's parameters, not the newest's.
    fids = [r["settings"]["em_10"]["fid"] for r in reports.values()]
    records = [json.loads(line) for line in (tmp_path / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in records) == [1, 2]
    assert {r["step"]: r["eval/em_10/fid"] for r in records} == {1: fids[0], 2: fids[1]}
    config.eval.checkpoint_step = 5
    with pytest.raises(CheckpointError, match=r"No checkpoint of step 5 .* it has \[1, 2\]"):
        evaluate.evaluate(config, str(tmp_path))


def test_eval_without_checkpoint_is_one_line_naming_workdir_and_fix(tmp_path, data_dir):
    from gl_jax.eval import evaluate
    from gl_jax.train.checkpoint import CheckpointError  # gl-jax prints it as "gl-jax: error: <message>".

    config = load_config("digits_vp", "smoke")
    config.data.data_dir = data_dir
    for workdir in (tmp_path / "missing", tmp_path):
        (tmp_path / "checkpoints").mkdir(exist_ok=True)  # The second: a folder with no checkpoint in it.
        with pytest.raises(CheckpointError) as info:
            evaluate.evaluate(config, str(workdir))
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"No checkpoint in {workdir}/checkpoints")
        assert "--mode train" in message


def test_unknown_sampler_in_settings_names_the_valid_ones(tmp_path, data_dir):
    import ml_collections

    from gl_jax.eval import evaluate
    from gl_jax.samplers import SAMPLERS

    config = load_config("digits_vp", "smoke")
    config.data.data_dir = data_dir
    config.eval.settings = ml_collections.ConfigDict({"fast": {"sampler": "ddmi", "steps": 10}})
    with pytest.raises(
        ValueError, match=r"Unknown sampler 'ddmi' \(config.eval.settings.fast.sampler\)"
    ) as info:
        evaluate.evaluate(config, str(tmp_path))
    assert all(name in str(info.value) for name in SAMPLERS) and "Did you mean 'ddim'?" in str(info.value)
    config.eval.settings = ml_collections.ConfigDict(
        {"fast": {"sampler": "ddim", "steps": 10, "options": {"eta_": 1}}}
    )
    with pytest.raises(ValueError, match=r"settings.fast.options.eta_.*did you mean '.*options.eta'"):
        evaluate.evaluate(config, str(tmp_path))
    config.eval.settings = ml_collections.ConfigDict({"fast": {"sampler": "ddim", "step": 10}})
    with pytest.raises(ValueError, match=r"config.eval.settings.fast.step'.*did you mean '.*fast.steps'"):
        evaluate.evaluate(config, str(tmp_path))


@pytest.mark.parametrize("n, d", [(5, 16), (16, 16), (40, 16)])
def test_fid_of_few_samples_matches_the_frechet_distance_of_fitted_gaussians(n, d):
    from gl_jax.eval.frechet import fid

    rng = np.random.default_rng(n)
    features = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, d)
    reference = gaussian_statistics(rng.normal(size=(3 * d, d)) + 0.3)
    fitted = gaussian_statistics(features)
    want = frechet_distance(fitted.mu, fitted.sigma, reference.mu, reference.sigma)
    # frechet_distance takes square roots of the D - N + 1 zero eigenvalues of a singular covariance as
    # rounded (each ~1e-8 times the scale), which bounds the agreement for N <= D.
    assert fid(features, reference) == pytest.approx(want, rel=1e-7)
    assert fid(fitted, reference) == pytest.approx(want, rel=1e-12)


def test_progress_resumes_only_with_the_same_fingerprint(tmp_path):
    from gl_jax.eval.progress import Progress

    folder = str(tmp_path / "unit")
    progress = Progress(folder, {"checkpoint_step": 2, "setting": ("ddim", 10)})
    progress.save(0, {"pool": np.ones((2, 3))}, seconds=1.5)
    (tmp_path / "unit" / "batch_000001.npz.tmp1.npz").write_bytes(b"half")  # A killed write.
    again = Progress(folder, {"checkpoint_step": 2, "setting": ["ddim", 10]})  # Lists equal tuples.
    assert again.done == 1 and again.seconds == 1.5 and not list((tmp_path / "unit").glob("*.tmp*"))
    np.testing.assert_array_equal(again.load()[0]["pool"], np.ones((2, 3)))
    other = Progress(folder, {"checkpoint_step": 4, "setting": ["ddim", 10]})  # A newer checkpoint.
    assert other.done == 0 and other.load() == [] and not (tmp_path / "unit" / "batch_000000.npz").exists()


def test_empty_settings_mean_the_configs_sampler():
    from gl_jax.eval.settings import EvalSetting, eval_settings

    config = load_config("digits_vp", "smoke")
    assert [s.name for s in eval_settings(config)] == ["em_10"]
    config.eval.settings = type(config.eval.settings)()
    assert eval_settings(config) == [EvalSetting("sample", None, None)]


def test_threshold_of_a_setting_defaults_to_the_configs_and_is_checked(tmp_path, data_dir):
    import types

    import ml_collections

    from gl_jax.eval import evaluate
    from gl_jax.eval.evaluate import _setting_fingerprint
    from gl_jax.eval.settings import eval_settings, resolve

    config = load_config("digits_vp", "smoke")
    config.sample.threshold = "dynamic"
    config.eval.settings = ml_collections.ConfigDict(
        {"a": {"sampler": "ddim", "steps": 4}, "b": {"sampler": "ddim", "steps": 4, "threshold": "static"}}
    )
    family = types.SimpleNamespace(takes_samplers=True)
    image = types.SimpleNamespace(kind="image")
    a, b = (resolve(s, config, family, image) for s in eval_settings(config))
    assert (a.threshold, b.threshold) == ("dynamic", "static")
    # Vector data has no [-1, 1] range to keep: a setting's threshold is refused as the config's is.
    vectors = types.SimpleNamespace(kind="vector", name="toy")
    with pytest.raises(ValueError, match=r"settings.b.threshold='static'.*dataset 'toy' is not images"):
        resolve(eval_settings(config)[1], config, family, vectors)
    # Samples drawn with another threshold are not resumed as these.
    assert _setting_fingerprint(config, a, 2) != _setting_fingerprint(config, b, 2)
    config.eval.settings.b.threshold = "statc"
    config.data.data_dir = data_dir
    with pytest.raises(
        ValueError, match=r"Unknown threshold 'statc' \(config.eval.settings.b.threshold\).*'static'"
    ):
        evaluate.evaluate(config, str(tmp_path))
