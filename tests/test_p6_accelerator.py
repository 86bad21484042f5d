"""The accelerator benchmark's smoke run on CPU (`benchmarks/p6_accelerator.py --smoke`), as CI runs it:
every row is there and its numbers agree with each other; and the peak table it measures MFU against."""

import itertools
import json
import os
import statistics
import subprocess
import sys

import pytest

from benchmarks import p6_accelerator as p6
from tests.conftest import REPO


# The tests of the smoke run are marked slow (it is ~60 s of compiles on 2 CPU cores); `pytest -m slow
# tests/test_p6_accelerator.py` runs them. The peak table's tests run by default.
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """(the JSON report, the printed tables) of one smoke run, in a subprocess on CPU."""
    path = tmp_path_factory.mktemp("p6") / "p6.json"
    cmd = [sys.executable, "-m", "benchmarks.p6_accelerator", "--smoke", "--json", str(path)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads(path.read_text()), out.stdout


@pytest.mark.slow
def test_every_row_is_there(smoke):
    report, _ = smoke
    train = {(r["model"], r["dtype"]) for r in report["train"]}
    assert train == set(itertools.product(p6.MODELS, p6.DTYPES))
    assert [r["sampler"] for r in report["sample"]] == list(p6.SAMPLERS)
    assert {r["sampler"]: r["nfe"] for r in report["sample"]} == {
        "edm_heun_35": 35,
        "dpm_solver_pp_2m_10": 10,
    }
    for row in report["train"] + report["sample"]:
        assert "error" not in row, row
        assert row["finite"], row


@pytest.mark.slow
def test_times_and_rates_agree(smoke):
    report, _ = smoke
    for row in report["train"]:
        assert row["compile_s"] > 0 and row["step_s"] > 0, row
        assert len(row["step_times_s"]) == 2  # --smoke times 2 steps.
        assert row["step_s"] == pytest.approx(statistics.median(row["step_times_s"]))
        assert row["images_per_s_per_device"] == pytest.approx(row["batch_per_device"] / row["step_s"])
        assert row["devices"] == 1 and row["batch_per_device"] == 2
        assert row["params"] > 0 and row["xla_plan_bytes"] > 0
    for row in report["sample"]:
        assert row["compile_s"] > 0 and row["call_s"] > 0, row
        assert row["call_s"] == pytest.approx(statistics.median(row["call_times_s"]))
        assert row["images_per_s_per_device"] == pytest.approx(row["batch"] / row["call_s"])


@pytest.mark.slow
def test_flops_from_xla_same_arithmetic_in_both_dtypes(smoke):
    report, _ = smoke
    flops = {(r["model"], r["dtype"]): r["flops_per_step"] for r in report["train"]}
    for row in report["train"]:
        assert row["flops_per_step"] > 0
        assert row["achieved_flops_per_s"] == pytest.approx(row["flops_per_step"] / row["step_s"])
    for model in p6.MODELS:
        # bf16 changes the operands' type, not the operations (XLA also counts the casts, a few percent here).
        assert flops[model, "bfloat16"] == pytest.approx(flops[model, "float32"], rel=0.1)
    # The two networks are not the same work.
    assert flops["ddpmpp", "float32"] != flops["dit", "float32"]


@pytest.mark.slow
def test_no_mfu_without_a_peak(smoke):
    report, printed = smoke
    assert report["device"]["platform"] == "cpu"
    assert report["device"]["peak"] is None
    assert all(row["mfu"] is None and row["peak_flops_per_s"] is None for row in report["train"])
    header = next(line for line in printed.splitlines() if line.startswith("| model |"))
    column = [c.strip() for c in header.split("|")].index("MFU")
    rows = [line for line in printed.splitlines() if line.startswith(("| DDPM++", "| DiT"))]
    assert len(rows) == 4
    assert all([c.strip() for c in line.split("|")][column] == "n/a" for line in rows)


@pytest.mark.slow
def test_peak_table_has_a_source_for_every_figure(smoke):
    report, _ = smoke
    assert [(e["pattern"], e["source"]) for e in report["peak_table"]] == [
        (pattern, peak.source) for pattern, peak in p6.PEAK_FLOPS
    ]
    for _, peak in p6.PEAK_FLOPS:
        assert isinstance(peak.source, str) and len(peak.source) > 20, peak
        assert peak.bfloat16 >= peak.float32 > 1e12, peak
        assert peak.float32_units, peak


def test_full_sizes_need_an_accelerator():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "benchmarks.p6_accelerator"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "only a CPU" in out.stdout and "--smoke" in out.stdout and "| model |" not in out.stdout


@pytest.mark.parametrize(
    "kind, name",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("Tesla V100-SXM2-16GB", "V100 SXM2"),
        ("Tesla V100-PCIE-32GB", "V100 PCIe"),
        ("Tesla V100S-PCIE-32GB", "V100S PCIe"),
        ("NVIDIA L4", "L4"),
        ("TPU v4", "TPU v4"),
        ("TPU v5 lite", "TPU v5e"),
        ("TPU v5p", "TPU v5p"),
        ("NVIDIA L40S", None),
        ("NVIDIA GH200 480GB", None),
        ("cpu", None),
    ],
)
def test_peak_for_device_kinds(kind, name):
    peak = p6.peak_for(kind)
    assert (peak.name if peak else None) == name


class _Compiled:
    """What `xla_flops` reads of a compiled executable."""

    def __init__(self, cost):
        self.cost = cost

    def cost_analysis(self):
        if isinstance(self.cost, Exception):
            raise self.cost
        return self.cost


@pytest.mark.parametrize(
    "cost, flops",
    [
        ({"flops": 3.0e9, "bytes accessed": 1.0}, 3.0e9),
        ([{"flops": 2.0e9}], 2.0e9),  # Older JAX: one dict per module.
        ([], None),
        (None, None),
        ({"bytes accessed": 1.0}, None),
        ({"flops": -1.0}, None),
        (NotImplementedError("no cost model"), None),
    ],
)
def test_xla_flops_across_jax_versions(cost, flops):
    assert p6.xla_flops(_Compiled(cost)) == flops
