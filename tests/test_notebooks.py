"""Every notebook in notebooks/ runs top to bottom in a fresh kernel of this interpreter.

The notebooks assert their own results (a two-sample test of trained samples, solver orders, likelihood
bounds, ...), so a notebook that runs is a notebook whose claims hold. They are committed without outputs.
"""

import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs the notebooks extra: pip install -e '.[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="needs the notebooks extra: pip install -e '.[notebooks]'")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def test_notebooks_exist():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear the outputs"
    scale_up = [c.source for c in nb.cells if c.cell_type == "markdown" and "Scaling up" in c.source]
    assert scale_up, f"{path.name} must tell the reader how to scale it up"


# Kept out of the default run for time (`make test` on 2 cores; run them with `-m slow`): 04 trains five
# families, each of which has its own tests (tests/families); 06 (~150 s) trains a classifier on synthetic
# data, a private model and a watermarked sampler, whose parts have their own tests (tests/eval,
# tests/train/test_privacy.py, tests/samplers); 02 (~55 s) and 03 (~35 s) compare samplers and likelihood
# estimators that tests/samplers and tests/test_likelihood.py check against closed forms.
SLOW_NOTEBOOKS = {"02_samplers", "03_likelihood", "04_families", "06_responsible_use"}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_NOTEBOOKS else p for p in NOTEBOOKS],
    ids=lambda p: p.stem,
)
def test_notebook_runs(path, data_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)  # The kernel inherits it: datasets are prepared once.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    # A last cell reports the kernel's interpreter, to check that it is this one (the venv's).
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # Raises CellExecutionError, with the cell and its traceback, when a cell fails.
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    assert os.path.realpath(printed.strip()) == os.path.realpath(sys.executable)
