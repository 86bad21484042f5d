"""The real `gl-jax` command in subprocesses, a trained toy run to copy, and snapshots of checkpoints."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import REPO

GL_JAX = os.path.join(os.path.dirname(sys.executable), "gl-jax")  # The console script pip installed.
TOY = str(REPO / "experiments" / "toy_vp.py") + ":smoke"  # 20 steps, checkpoints at 10 and 20.
# A toy run long enough to be disturbed part-way: ~1-5 ms per step after compilation.
LONG = [
    "--config.train.num_steps=6000",
    "--config.train.steps_per_call=1",
    "--config.train.log_every=100",
    "--config.train.checkpoint_every=100",
    "--config.train.max_to_keep=2",
]


# One persistent compilation cache for the session's commands (created private, as gl-jax requires): the
# first toy run compiles, the others load (~35 s -> ~5 s a command on 2 cores).
_CACHE = tempfile.mkdtemp(prefix="gl_jax_test_cache_")


def env(data_dir: str) -> dict:
    out = {**os.environ, "TFDS_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    out.pop("JAX_COMPILATION_CACHE_DIR", None)
    return out


def gl_jax(
    *args, data_dir: str, timeout: float = 600, cache: str | None = _CACHE
) -> subprocess.CompletedProcess:
    """Runs `gl-jax ARGS` to the end (`cache=None`: no --compilation_cache flag of its own)."""
    cache_flag = [f"--compilation_cache={cache}"] if cache is not None else []
    return subprocess.run(
        [GL_JAX, *cache_flag, *map(str, args)],
        env=env(data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def launch(*args, data_dir: str, cache: str = _CACHE) -> subprocess.Popen:
    """Starts `gl-jax ARGS` in the background."""
    return subprocess.Popen(
        [GL_JAX, f"--compilation_cache={cache}", *map(str, args)],
        env=env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def steps(workdir) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def wait_for_checkpoint(proc, workdir, at_least: int, timeout: float = 300) -> int:
    start = time.time()
    while time.time() - start < timeout:
        found = steps(workdir)
        if found and found[-1] >= at_least:
            return found[-1]
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.01)
    raise TimeoutError(f"no checkpoint >= {at_least} appeared in {workdir}")


def state_of(workdir, step: int | None = None) -> tuple[int, dict]:
    step = steps(workdir)[-1] if step is None else step
    return step, ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def assert_same_state(a: dict, b: dict) -> None:
    import jax

    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 4
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def snapshot(folder) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by relative path."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("gl-jax:")]


# The toy run with a checkpoint every 10 steps, all kept: 14 checkpoints to corrupt one file kind each in.
FOURTEEN = ["--config.train.num_steps=140", "--config.train.max_to_keep=20"]


@pytest.fixture(scope="session")
def trained_toy(tmp_path_factory, data_dir) -> str:
    """A finished `toy_vp:smoke` run (checkpoints at steps 10 and 20), to be copied, never changed."""
    workdir = tmp_path_factory.mktemp("trained_toy") / "run"
    proc = gl_jax("--config", TOY, "--workdir", workdir, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert steps(workdir) == [10, 20]
    return str(workdir)


@pytest.fixture(scope="session")
def trained_toy_140(tmp_path_factory, data_dir) -> str:
    """The same run to step 140 with every checkpoint kept (10, 20, ..., 140), never changed."""
    workdir = tmp_path_factory.mktemp("trained_toy_140") / "run"
    proc = gl_jax("--config", TOY, *FOURTEEN, "--workdir", workdir, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert steps(workdir) == list(range(10, 141, 10))
    return str(workdir)


def copy_run(source: str, dest) -> str:
    shutil.copytree(source, dest)
    return str(dest)


__all__ = [
    "GL_JAX",
    "TOY",
    "LONG",
    "FOURTEEN",
    "gl_jax",
    "launch",
    "steps",
    "wait_for_checkpoint",
    "state_of",
    "assert_same_state",
    "snapshot",
    "error_lines",
    "copy_run",
]
