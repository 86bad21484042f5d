"""Sample quality per CPU-hour: FID over training time of a run, e.g. `experiments/fashion_mnist_edm.py`.

  gl-jax --config experiments/fashion_mnist_edm.py --workdir runs/fm_edm       # the hour of training
  python -m benchmarks.cpu_recipe --workdir runs/fm_edm [--steps 600 1200 1800 2400] [--picture FILE] \
    [--title fashion_mnist_edm]

For each kept checkpoint (or the `--steps` given) that eval/metrics.jsonl does not hold yet, runs
`gl-jax --workdir W --mode eval --config.eval.checkpoint_step=N` (the run's saved config, or `--config`; the
config's eval settings, sample count and reference statistics). Then reads, for every evaluated step, the
FID of each sampler setting and the training time it took to get there, and writes
`<workdir>/eval/fid_vs_minutes.png` (FID against minutes, one line per setting; `--floor` draws the FID of
real held-out images on the same protocol) and `<workdir>/eval/fid_vs_minutes.md` (the table it prints).

Training minutes at step n = the train step's compile seconds + the sum over logging intervals up to n of
(steps in the interval / its steps per second), from the run's metrics.jsonl: the time of the training
loop, with checkpoint saves, without start-up before the compilation (imports, reading the dataset: about
half a minute) and without the end-of-run sample grid. A resumed run's intervals add up the same way.

Recorded (2026-12-03, `fashion_mnist_edm`, 2 cores, nothing else running): see the README's "Sample quality
per CPU-hour" table, which this script printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from gl_jax import files, plots

__all__ = ["training_minutes", "fid_by_step", "main"]


def _records(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_minutes(metrics_path: str) -> dict[int, float]:
    """Minutes of training at each logged step of a run's metrics.jsonl (see the module docstring).

    Args:
      metrics_path: `<workdir>/metrics.jsonl`.

    Returns:
      {step: minutes} for every record with `train/steps_per_sec`, and step 0 (the compilation).
    """
    seconds, last_step, out = 0.0, 0, {}
    for record in _records(metrics_path):
        step = int(record["step"])
        if "train/compile_seconds" in record:
            seconds += float(record["train/compile_seconds"])
            out.setdefault(step, seconds / 60)
            last_step = step
        if "train/steps_per_sec" in record and step > last_step:
            seconds += (step - last_step) / max(float(record["train/steps_per_sec"]), 1e-9)
            out[step] = seconds / 60
            last_step = step
    return out


def fid_by_step(eval_metrics_path: str) -> dict[int, dict[str, float]]:
    """{step: {setting: FID}} from a run's eval/metrics.jsonl (the newest record of each step)."""
    out: dict[int, dict[str, float]] = {}
    for record in _records(eval_metrics_path):
        fids = {
            key[len("eval/") : -len("/fid")]: float(v)
            for key, v in record.items()
            if key.startswith("eval/") and key.endswith("/fid")
        }
        if fids:
            out[int(record["step"])] = fids
    return out


def _minutes_at(step: int, minutes: dict[int, float]) -> float:
    """Minutes at `step`: the logged step itself, else interpolated between its neighbours."""
    steps = np.array(sorted(minutes))
    return float(np.interp(step, steps, [minutes[s] for s in steps]))


def _checkpoint_steps(workdir: str) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(int(n) for n in names if n.isdigit())


def _evaluate(workdir: str, step: int, config: str | None) -> None:
    command = [sys.executable, "-m", "gl_jax.main", f"--workdir={workdir}", "--mode=eval"]
    command += [f"--config={config}"] if config else []
    command += [f"--config.eval.checkpoint_step={step}"]
    print(f"step {step}: {' '.join(command[1:])}", flush=True)
    status = subprocess.run(command).returncode
    if status != 0:
        raise SystemExit(
            f"cpu_recipe: the evaluation of step {step} exited with status {status} (its message is above); "
            "mend that and run this again: steps already evaluated are kept."
        )


def _plot(path: str, rows: list[tuple[int, float, dict[str, float]]], *, floor: float | None, title: str):
    names = sorted({name for _, _, fids in rows for name in fids})
    curves = {}
    for name in names:
        minutes, fid = zip(*[(m, fids[name]) for _, m, fids in rows if name in fids], strict=True)
        curves[name] = (np.array(minutes), np.array(fid))
    reference = None if floor is None else (floor, f"held-out real images ({floor:g})")
    plots.save_curves(
        path, curves, xlabel="training minutes (2 CPU cores)", ylabel="FID", title=title, reference=reference
    )


def table(rows: list[tuple[int, float, dict[str, float]]]) -> str:
    """Markdown: one row per evaluated step with its minutes, each setting's FID and the best one."""
    names = sorted({name for _, _, fids in rows for name in fids})
    lines = [
        "| step | minutes | " + " | ".join(names) + " | best |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for step, minutes, fids in rows:
        best = min(fids, key=fids.get)
        cells = [f"{fids[n]:.1f}" if n in fids else "" for n in names]
        lines.append(f"| {step} | {minutes:.1f} | " + " | ".join(cells) + f" | {fids[best]:.1f} ({best}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="the training run's folder")
    parser.add_argument("--config", default=None, help="config for --mode eval (default: the run's own)")
    parser.add_argument("--steps", type=int, nargs="*", default=None, help="steps (default: all kept)")
    parser.add_argument("--floor", type=float, default=None, help="FID of held-out real images (a line)")
    parser.add_argument("--picture", default=None, help="also copy the PNG here (e.g. for the README)")
    parser.add_argument("--title", default=None, help="the picture's title (default: the workdir's name)")
    args = parser.parse_args(argv)
    workdir = os.path.abspath(args.workdir)
    eval_metrics = os.path.join(workdir, "eval", "metrics.jsonl")
    wanted = args.steps if args.steps is not None else _checkpoint_steps(workdir)
    done = fid_by_step(eval_metrics)
    for step in wanted:
        if step not in done:
            _evaluate(workdir, step, args.config)
    minutes = training_minutes(os.path.join(workdir, "metrics.jsonl"))
    fids = fid_by_step(eval_metrics)
    rows = [(step, _minutes_at(step, minutes), fids[step]) for step in sorted(fids)]
    if not rows:
        raise SystemExit(f"No evaluated checkpoint in {workdir}; train first.")
    text = table(rows)
    print(text)
    files.write_bytes(os.path.join(workdir, "eval", "fid_vs_minutes.md"), (text + "\n").encode())
    path = os.path.join(workdir, "eval", "fid_vs_minutes.png")
    _plot(path, rows, floor=args.floor, title=args.title or os.path.basename(workdir))
    if args.picture:
        with open(path, "rb") as f:
            files.write_bytes(args.picture, f.read())  # Atomic, as the picture it copies.
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
