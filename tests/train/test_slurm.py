"""Launching on a SLURM cluster (docs/scaling.md): two `gl-jax` processes given only the variables SLURM
sets for its tasks join one job through JAX's cluster detection and train; the example sbatch file's
command is one that `gl-jax` accepts."""

import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, load_config

SBATCH = REPO / "examples" / "slurm" / "train.sbatch"
SCALING_DOC = REPO / "docs" / "scaling.md"

# JAX's SLURM detection (jax/_src/clusters/slurm_cluster.py) puts the coordinator on the first host of
# $SLURM_STEP_NODELIST, at port 61440 + $SLURM_JOB_ID % 4096 (the top 4096 ports of the ephemeral range).
_PORTS = 4096
_FIRST_PORT = 65536 - _PORTS


def _free_job_id() -> int:
    """A job id whose derived coordinator port is free on this machine now (a test run beside another, or
    any program holding a port up there, must not collide with it)."""
    for port in random.sample(range(_FIRST_PORT, _FIRST_PORT + _PORTS), 64):
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        return 250 * _PORTS + port - _FIRST_PORT  # A six-digit id, like a real cluster's.
    raise AssertionError(f"No free port in {_FIRST_PORT}..65535 for the coordinator.")


def _slurm_env(job_id: int, task: int, *, ntasks: int, data_dir: str) -> dict[str, str]:
    """The environment SLURM gives task `task` of a one-node job step of `ntasks` tasks (the variables JAX
    reads, and their companions), each task with 2 CPU devices."""
    # What would make JAX pick another cluster, or bypass the detection, is left out; so are proxies,
    # which gRPC would send the coordinator's connections through.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR_", "JAX_LOCAL_DEVICE_IDS"))
        and k != "KUBERNETES_SERVICE_HOST"
        and not k.lower().endswith("_proxy")
    }
    return {
        **inherited,
        "TFDS_DATA_DIR": data_dir,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        # Read by JAX: all five must be set for it to detect SLURM.
        "SLURM_JOB_ID": str(job_id),
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_NTASKS": str(ntasks),
        "SLURM_PROCID": str(task),
        "SLURM_LOCALID": str(task),  # On GPUs, JAX gives task i of a node that node's GPU i.
        # Set by SLURM beside them; JAX does not read these.
        "SLURM_STEP_NUM_NODES": "1",
        "SLURM_STEP_NUM_TASKS": str(ntasks),
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_STEPID": "0",
    }


def _wait_all(procs: list[subprocess.Popen], timeout: float) -> None:
    """Waits for every process; when one fails, the others are not waited for (they would hang in a
    collective until the coordinator's heartbeat timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [p.poll() for p in procs]  # Every one polled, each time.
        if None not in codes or any(code not in (None, 0) for code in codes):
            return
        time.sleep(0.2)


def _kill(procs: list[subprocess.Popen]) -> None:
    """Ends what is left of each process and its children (each was started in its own process group)."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.slow  # Two processes; tests/train/test_distributed.py runs two processes in the default run.
def test_two_slurm_tasks_join_through_jax_detection_and_train(tmp_path, data_dir):
    workdir = tmp_path / "run"
    job_id = _free_job_id()
    args = [
        "--config",
        "toy_vp:smoke",
        "--workdir",
        str(workdir),
        "--config.distributed.enabled=True",  # Nothing else about the job: JAX detects it.
        "--config.distributed.initialization_timeout=60",
        "--config.train.num_steps=4",
        "--config.train.steps_per_call=2",
        "--config.train.log_every=2",
        "--config.train.checkpoint_every=2",
        "--config.sample.num_samples=16",
        "--compilation_cache=off",
    ]
    procs, logs = [], []
    try:
        for task in range(2):
            logs.append(open(tmp_path / f"task{task}.log", "w+"))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.train._slurm_worker", str(tmp_path / f"written{task}.json")]
                    + ["--", *args],
                    env=_slurm_env(job_id, task, ntasks=2, data_dir=data_dir),
                    stdout=logs[-1],
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                    start_new_session=True,
                )
            )
        _wait_all(procs, timeout=300)
        outputs = []
        for task, (proc, log) in enumerate(zip(procs, logs, strict=True)):
            log.seek(0)
            outputs.append(log.read())
            assert proc.returncode == 0, (
                f"task {task} (exit {proc.returncode}; None: still running):\n{outputs[-1][-4000:]}"
            )
    finally:
        _kill(procs)
        for log in logs:
            log.close()

    # Both joined one job of 2 processes and 4 devices, with the coordinator found from SLURM's variables.
    for task, output in enumerate(outputs):
        assert f"Process {task} of 2 joined the job; 2 local of 4 devices." in output, output[-4000:]

    # They trained: the losses of both logged steps, a checkpoint at each, the final picture.
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["train/loss"] for r in records if "train/loss" in r}
    assert sorted(losses) == [2, 4] and all(isinstance(v, float) for v in losses.values()), records
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    assert sorted(p.name for p in (workdir / "samples").glob("*.png")) == ["step_0000004.png"]

    # Process 0 alone wrote the run's record, metrics, TensorBoard events and pictures.
    def run_files(task: int) -> set[str]:
        written = json.loads((tmp_path / f"written{task}.json").read_text())
        return {
            os.path.relpath(p, workdir)
            for p in written
            if p.startswith(str(workdir) + os.sep) and not p.startswith(str(workdir / "checkpoints"))
        }

    main, other = run_files(0), run_files(1)
    assert {"run.json", "metrics.jsonl", "loss_curve.png", "samples/step_0000004.png"} <= main, main
    assert any(p.startswith("tensorboard/") for p in main), main
    # Every process checks that it can write the workdir (`prepare_workdir`'s probe, removed at once).
    assert all(p.startswith(".write_test_") for p in other), other


def _sbatch_command() -> tuple[dict[str, str], list[str]]:
    """The example sbatch file's `#SBATCH` options and the arguments its `srun` line gives `gl-jax`."""
    text = SBATCH.read_text()
    options = dict(re.findall(r"^#SBATCH\s+--([\w-]+)=(\S+)", text, flags=re.MULTILINE))
    lines = text.replace("\\\n", " ").splitlines()  # Continuation lines joined.
    (srun,) = [line for line in lines if line.lstrip().startswith("srun ")]
    words = shlex.split(srun)
    (program,) = [i for i, w in enumerate(words) if os.path.basename(w) == "gl-jax"]
    return options, words[program + 1 :]


def test_sbatch_example_runs_one_task_per_gpu_and_its_command_parses(tmp_path):
    options, args = _sbatch_command()
    # JAX's SLURM detection gives task i of a node the node's GPU i, so every task must see all the
    # node's GPUs: GPUs per node, one task each (`--gpus-per-task` would hide GPU i from task i).
    assert options["ntasks-per-node"] == options["gpus-per-node"], options
    assert "gpus-per-task" not in options, options
    assert "--config.distributed.enabled=True" in args, args

    args = [
        a.replace("$WORKDIR", str(tmp_path / "run")).replace("${WORKDIR}", str(tmp_path / "run"))
        for a in args
    ]
    result = subprocess.run(
        [sys.executable, "-m", "gl_jax.main", *args, "--print_config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^distributed:\n(  .*\n)*  enabled: true$", result.stdout, flags=re.MULTILINE), (
        result.stdout
    )


def test_scaling_doc_names_only_config_keys_that_exist():
    config = load_config("cifar10_vp_ddpmpp")
    paths = set(re.findall(r"\bconfig\.((?:\w+\.)*\w+)", SCALING_DOC.read_text()))
    assert {"distributed.enabled", "data.num_shards", "mesh.fsdp"} <= paths, paths
    missing = []
    for path in sorted(paths):
        node = config
        for key in path.split("."):
            if not hasattr(node, "keys") or key not in node:
                missing.append(path)
                break
            node = node[key]
    assert not missing, missing


def test_slurm_tasks_without_distributed_enabled_are_refused_with_the_fix(monkeypatch):
    from gl_jax.configs import base_config
    from gl_jax.train import distributed

    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "1")
    with pytest.raises(ValueError, match=r"one of 4 SLURM tasks.*--config.distributed.enabled=True"):
        distributed.initialize(base_config().distributed)
    monkeypatch.setenv("SLURM_NTASKS", "1")  # One task: nothing to join.
    assert distributed.initialize(base_config().distributed) is False
