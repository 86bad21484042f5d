"""docs/adding_a_family.md runs as written: its code blocks, executed in order in a fresh process, add a
family in under 60 lines and train it with the real loop to the closed-form optimum."""

import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "adding_a_family.md"


def code_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def test_the_family_takes_under_60_lines():
    family, builder = code_blocks()[:2]
    lines = [line for line in (family + builder).splitlines() if line.strip()]
    assert len(lines) < 60, len(lines)
    assert "class DiagonalGaussian(Family)" in family and 'FAMILIES.register("gaussian"' in builder


def test_the_walkthrough_trains_the_family_to_the_data_mean_and_std(tmp_path, data_dir):
    script = tmp_path / "walkthrough.py"
    script.write_text("\n\n".join(code_blocks()))
    env = {**os.environ, "TFDS_DATA_DIR": data_dir}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    numbers = re.search(r"fitted mean \[(.*?)\] std \[(.*?)\]", proc.stdout.replace("\n", " "))
    mean, std = ([float(v) for v in group.split()] for group in numbers.groups())
    ring_std = (
        2.0**2 / 2 + 0.15**2
    ) ** 0.5  # Per coordinate, for 8 modes of std 0.15 on a circle of radius 2.
    assert all(abs(m) < 0.1 for m in mean), mean
    assert all(abs(s - ring_std) < 0.1 for s in std), std
