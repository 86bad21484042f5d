"""The 2-D mesh ("data", "fsdp"): one run trained, saved, restored and sampled on several meshes and
process counts gives the same numbers.

Each configuration is a fresh process with 8 (or 1, 4, 2 x 2) CPU host devices (tests/train/_mesh_worker.py):
  * 3 steps of the digits U-Net score model and of the digits GAN with fsdp=8, data=8, data=2 x fsdp=4 and
    on 1 device give the same losses (to 1e-5);
  * with fsdp=8 one device holds at most 1/6 of the state;
  * the checkpoint saved with fsdp=8 restores on 1 device, on 4 (data parallel) and on 2 processes x 2
    devices with bitwise equal parameters;
  * `--mode sample` from it writes the same samples on 1, 4 and 8 devices and on 2 processes x 2 devices.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

FAMILIES = ("digits_vp", "digits_gan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(devices: int, out, data_dir, *args):
    env = {
        **os.environ,
        "TFDS_DATA_DIR": data_dir,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    cmd = [sys.executable, "-m", "tests.train._mesh_worker", "--out", str(out), *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _wait(*procs):
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-4000:]
    finally:
        for proc in procs:
            proc.kill()


def _run(devices, out, data_dir, *args):
    _wait(_start(devices, out, data_dir, *args))


def _two_processes(out, data_dir, *args):
    port = _free_port()
    _wait(
        *(
            _start(2, out, data_dir, *args, "--num-processes", 2, "--process-id", i, "--port", port)
            for i in range(2)
        )
    )


def _copy(run, to):
    """A copy of the saved run without its samples: each sampling job then numbers its file 1 and draws
    with the same key."""
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("samples"))
    return to


@pytest.fixture(scope="module")
def saved(tmp_path_factory, data_dir):
    """The runs trained with fsdp=8 (their checkpoints are what the other meshes restore)."""
    root = tmp_path_factory.mktemp("fsdp8")
    out = root / "out"
    _run(8, out, data_dir, "--train", root / "runs", "--fsdp", 8, "--sample", root / "runs", "--state-bytes")
    return root


def _losses(out) -> dict:
    return {name: json.loads((out / f"losses_{name}.json").read_text()) for name in FAMILIES}


@pytest.mark.slow
def test_meshes_train_restore_and_sample_alike(saved, tmp_path, data_dir):
    runs, want = saved / "runs", _losses(saved / "out")
    assert all(len(v) == 3 and np.all(np.isfinite(v)) for v in want.values()), want
    # fsdp=8: one device holds its shard of DDPM's CIFAR-10 U-Net state, at most 1/6 of the whole (the
    # rest: arrays too small to shard).
    sizes = json.loads((saved / "out" / "state_bytes.json").read_text())
    assert sizes["per_device"] <= sizes["whole"] / 6, sizes

    jobs = {
        "data8": (8, ["--data", 8, "--train", tmp_path / "d8", "--sample", _copy(runs, tmp_path / "s8")]),
        "data2_fsdp4": (8, ["--data", 2, "--fsdp", 4, "--train", tmp_path / "d2f4"]),
        "one": (1, ["--train", tmp_path / "d1", "--restore", runs, "--sample", _copy(runs, tmp_path / "s1")]),
        "data4": (4, ["--restore", runs, "--sample", _copy(runs, tmp_path / "s4")]),
    }
    for name, (devices, args) in jobs.items():
        _run(devices, tmp_path / name, data_dir, *args)
    _two_processes(tmp_path / "two", data_dir, "--restore", runs, "--sample", _copy(runs, tmp_path / "s22"))

    for name in ("data8", "data2_fsdp4", "one"):
        got = _losses(tmp_path / name)
        for family in FAMILIES:
            np.testing.assert_allclose(
                got[family], want[family], rtol=1e-5, atol=1e-6, err_msg=f"{name} {family}"
            )

    with np.load(tmp_path / "one" / "restored.npz") as f:
        restored = dict(f)
    assert len(restored) > 10
    for name in ("data4", "two"):
        with np.load(tmp_path / name / "restored.npz") as f:
            assert set(f) == set(restored)
            for key in restored:
                np.testing.assert_array_equal(f[key], restored[key], err_msg=f"{name} {key}")

    with np.load(saved / "out" / "samples.npz") as f:
        samples = f["samples"]
    assert samples.shape == (16, 8, 8, 1) and np.all(np.isfinite(samples))
    for name in ("data8", "one", "data4", "two"):
        with np.load(tmp_path / name / "samples.npz") as f:
            np.testing.assert_array_equal(f["samples"], samples, err_msg=name)
