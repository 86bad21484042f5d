"""Multi-process training: two processes joined over gloo compute what one process does, on disjoint data."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from gl_jax.data.pipeline import load_arrays
from gl_jax.data.sources import open_dataset
from tests.conftest import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(devices: int, workdir, out, data_dir, *extra):
    env = {
        **os.environ,
        "TFDS_DATA_DIR": data_dir,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    cmd = [sys.executable, "-m", "tests.train._multihost", "--workdir", str(workdir), "--out", str(out)]
    return subprocess.Popen(
        [*cmd, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )


def _rows(x: np.ndarray) -> np.ndarray:
    """The rows of `x` in lexicographic order (compares sets of examples)."""
    return x[np.lexsort(x.T[::-1])]


def test_two_processes_of_two_devices_equal_one_process_of_four(tmp_path, data_dir):
    spec, sources = open_dataset("toy/gmm_2d", data_dir=data_dir)  # Prepared once, before the workers.
    port = _free_port()
    procs = [
        _launch(
            2,
            tmp_path / "two",
            tmp_path / "out2",
            data_dir,
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            "--port",
            str(port),
        )
        for i in range(2)
    ]
    procs.append(_launch(4, tmp_path / "one", tmp_path / "out1", data_dir))
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]

    # Same parameters after 6 steps (4 devices either way; the gradient all-reduce crosses processes).
    one, two = np.load(tmp_path / "out1" / "params.npz"), np.load(tmp_path / "out2" / "params.npz")
    assert len(one.files) == len(two.files) > 4
    diff = max(float(np.max(np.abs(one[k] - two[k]))) for k in one.files)
    assert diff <= 1e-6, diff

    # Each process read one of the 2 shards; they are disjoint and together the whole train split.
    shards = [dict(np.load(tmp_path / "out2" / f"shards_{i}.npz")) for i in range(2)]
    assert [list(s) for s in shards] == [["shard_0_of_2"], ["shard_1_of_2"]]
    full = load_arrays(sources["train"], spec)["x"]
    read = np.concatenate([shards[0]["shard_0_of_2"], shards[1]["shard_1_of_2"]])
    assert len(read) == len(full) == len(np.unique(full, axis=0))
    np.testing.assert_array_equal(_rows(read), _rows(full))

    # Checkpoints written by both processes together restore on both; one metrics log, one picture.
    for i in range(2):
        assert json.loads((tmp_path / "out2" / f"restored_{i}.json").read_text()) == {"same": True, "step": 6}
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["3", "6"]
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 3, 6, 6]  # Compile time, two logs, the eval loss.
    assert sorted(p.name for p in (tmp_path / "two" / "samples").iterdir()) == [
        "step_0000006.png",
        "step_0000006.png.provenance.json",
    ]
