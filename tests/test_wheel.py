"""gl_jax installed from a built wheel works without a clone: the experiment configs ship inside the package
(`gl_jax.experiments`), so `gl-jax --config toy_vp:smoke` and the quickstart notebook run.

The wheel is built once (without its dependencies: seconds); the tests check what is in it, that the
installed copy alone on the path finds its configs and resolves a config by name, and (marked slow: 71-85 s
on 2 CPU cores with pip's cache warm) install it with its dependencies into a fresh venv, train
`toy_vp:smoke` and run notebook 01 there, as a user would.
"""

import json
import os
import subprocess
import sys
import venv
import zipfile

import pytest
from setuptools.config.setupcfg import read_configuration

from tests.conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("gl_jax-*.whl")
    return str(path)


def test_setup_cfg_lists_every_package():
    # setup.cfg lists the packages by hand (to map experiments/ to gl_jax.experiments): none may be missed.
    listed = set(read_configuration(str(REPO / "setup.cfg"))["options"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "gl_jax").rglob("__init__.py")} | {
        "gl_jax.experiments"
    }
    assert listed == found


def test_wheel_holds_the_configs_and_package_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (REPO / "experiments").glob("*.py"):
        assert f"gl_jax/experiments/{path.name}" in names, path.name
    for path in (REPO / "gl_jax").rglob("*.py"):
        assert path.relative_to(REPO).as_posix() in names, path
    assert "gl_jax/py.typed" in names
    # Nothing outside the package: no top-level experiments/, tests/ or benchmarks/.
    assert {n.split("/", 1)[0] for n in names} == {
        "gl_jax",
        os.path.basename(wheel).split("-py")[0] + ".dist-info",
    }


def test_installed_wheel_finds_its_configs_outside_a_clone(wheel, tmp_path):
    # The wheel unpacked into a folder that comes first on the path, run from a folder that is not the
    # repository: the copy imported is the wheel's, and it resolves configs by name from itself.
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = (
        "import json, sys, gl_jax, gl_jax.experiments as e\n"
        "from gl_jax import main\n"
        "argv = main._resolve_config(['--config', 'toy_vp:smoke'])\n"
        "c = e.get_config('digits_latent:smoke')\n"
        "print(json.dumps([gl_jax.__file__, e.config_path('toy_vp'), argv, c.family, len(e.names())]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    package, toy, argv, family, count = json.loads(proc.stdout.strip().splitlines()[-1])
    assert package.startswith(str(target)) and toy == str(target / "gl_jax" / "experiments" / "toy_vp.py")
    assert argv == [f"--config={toy}:smoke"]
    assert family == "latent" and count == len(list((REPO / "experiments").glob("[!_]*.py")))


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_trains_and_runs_the_quickstart(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"{wheel}[notebooks]"], check=True, capture_output=True, timeout=1800)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TFDS_DATA_DIR"] = str(tmp_path / "tfds")
    run = tmp_path / "run"
    proc = subprocess.run(
        [str(env_dir / "bin" / "gl-jax"), "--config", "toy_vp:smoke", "--workdir", str(run)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "run.json").is_file() and list((run / "samples").glob("*.png"))
    # Notebook 01, copied out of the clone, in a kernel of the fresh venv.
    notebook = tmp_path / "01_quickstart.ipynb"
    notebook.write_text((REPO / "notebooks" / "01_quickstart.ipynb").read_text())
    script = (
        "import sys, nbclient, nbformat\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "nbclient.NotebookClient(nb, timeout=900, kernel_name='python3').execute()\n"
        "print('ran', len(nb.cells))\n"
    )
    proc = subprocess.run(
        [python, "-c", script, str(notebook)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith("ran ")
