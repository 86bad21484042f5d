"""The API reference (docs/api, Sphinx autodoc + napoleon) builds with warnings as errors and nitpicky
references, and documents every module of the public packages."""

import pathlib
import pkgutil
import re
import shutil
import subprocess
import sys

import pytest

import gl_jax

pytest.importorskip("sphinx", reason="needs the docs extra: pip install -e '.[docs]'")

REPO = pathlib.Path(__file__).resolve().parents[1]
API = REPO / "docs" / "api"
PUBLIC = ("sde", "parametrization", "analytic", "losses", "samplers", "likelihood")
PUBLIC += ("models", "families", "train", "eval", "data")
# Top-level modules: the lowest layer's, on the utilities page, and the run loader.
UTILITIES = ("registry", "spec", "pixels", "plots", "files", "rng", "interrupts", "trained", "experiments")
UTILITIES += ("xla_flags",)


def sphinx_build(source: pathlib.Path, out: pathlib.Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "-n",
        "--keep-going",
        "-q",
        "-b",
        "html",
        str(source),
        str(out),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)


def documented_modules() -> set[str]:
    return {m for page in API.glob("*.rst") for m in re.findall(r"automodule:: (\S+)", page.read_text())}


def test_every_public_module_is_documented():
    documented = documented_modules()
    expected = {f"gl_jax.{name}" for name in PUBLIC + UTILITIES}
    for name in PUBLIC:
        package = getattr(__import__(f"gl_jax.{name}"), name)
        if hasattr(package, "__path__"):
            expected |= {m.name for m in pkgutil.iter_modules(package.__path__, f"gl_jax.{name}.")}
    assert expected - documented == set(), "add these modules to a page of docs/api"
    assert all(m.split(".")[1] in PUBLIC + UTILITIES for m in documented)


def test_api_docs_build_without_warnings(tmp_path):
    result = sphinx_build(API, tmp_path / "html")
    assert result.returncode == 0, result.stderr[-5000:]
    pages = {p.stem for p in (tmp_path / "html").glob("*.html")}
    assert set(PUBLIC) | {"utilities"} <= pages
    samplers = (tmp_path / "html" / "samplers.html").read_text()
    for name in (
        "euler_maruyama.euler_maruyama",
        "pc.pc_sampler",
        "dpm_solver.dpm_solver_pp",
        "conditional.inpaint",
    ):
        assert f'id="gl_jax.samplers.{name}"' in samplers  # Rendered with its signature and docstring.
    assert gl_jax.__version__ in (tmp_path / "html" / "index.html").read_text()


def test_broken_reference_to_gl_jax_fails_the_build(tmp_path):
    # Third-party names are exempt from nitpicky mode (no network for their inventories); ours are not.
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(API / "conf.py", source / "conf.py")
    (source / "index.rst").write_text(
        "Check\n=====\n\n:class:`jax.Array` and :func:`gl_jax.samplers.no_such_sampler`.\n"
    )
    result = sphinx_build(source, tmp_path / "html")
    assert result.returncode != 0
    assert "gl_jax.samplers.no_such_sampler" in result.stderr
    assert "jax.Array" not in result.stderr


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(readme_python_blocks())))
def test_readme_python_examples_run(index, tmp_path):
    code = readme_python_blocks()[index]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, f"README example {index} failed:\n{code}\n{result.stderr[-3000:]}"


def test_readme_lists_every_experiment_with_its_published_targets():
    from tests.conftest import load_config

    readme = (REPO / "README.md").read_text()
    labels = {"fid": "FID {:g}", "fid_ode": "FID (ODE) {:g}", "nll_bpd": "NLL {:g} bits/dim"}
    for path in sorted((REPO / "experiments").glob("[!_]*.py")):  # Not the package's __init__.py.
        rows = [line for line in readme.splitlines() if line.startswith(f"| `experiments/{path.name}")]
        assert len(rows) == 1, f"README's experiment tables need one row for experiments/{path.name}"
        targets = load_config(path.stem).get("targets") or {}
        for key, value in targets.items():
            assert labels[key].format(value) in rows[0], f"{path.name}: README lacks its target {key}={value}"


def test_architecture_names_only_paths_and_modules_that_exist():
    """docs/architecture.md is drawn as built: every file, folder and module it names is there."""
    text = (REPO / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`((?:gl_jax|experiments|benchmarks|tests|notebooks|docs)/[\w./{}-]*)`", text))
    assert len(paths) > 20
    missing = sorted(p for p in paths if "{" not in p and not (REPO / p.rstrip("/")).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
    modules = set(re.findall(r"\bgl_jax(?:\.\w+)+", text))
    files = {m for m in modules if (REPO / m.replace(".", "/")).with_suffix(".py").exists()}
    packages = {m for m in modules if (REPO / m.replace(".", "/") / "__init__.py").exists()}
    # A dotted name that is neither a module nor a package must be an attribute of one.
    unknown = []
    for name in sorted(modules - files - packages):
        module, _, attr = name.rpartition(".")
        try:
            if not hasattr(__import__(module, fromlist=[attr]), attr):
                unknown.append(name)
        except ImportError:
            unknown.append(name)
    assert not unknown, f"docs/architecture.md names modules or attributes that do not exist: {unknown}"
