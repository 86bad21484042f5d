"""Usefulness of class-conditional diffusion samples: CAS and augmentation tables, digits and Fashion-MNIST.

For a class-conditional diffusion model (experiments/digits_vp_cond.py, experiments/fashion_mnist_vp_cond.py:
labels embedded, label dropout 0.1, classifier-free guidance) this trains the model (or reads a trained
run's workdir), draws class-balanced samples at each guidance weight, and trains the one fixed classifier of
`gl_jax.eval.usefulness` (an MLP, 2000 Adam steps, fixed seed) on them:

  CAS           test accuracy of the classifier trained on samples only (Ravuri & Vinyals 2019), beside the
                same classifier trained on the real training split and on as many real images as samples.
  augmentation  test accuracy with 1 %, 10 %, 100 % of the real training split (class-stratified, nested),
                alone and with all the samples added.
  closer        the samples' fraction nearer to a training image than that image is to its nearest other
                one (`gl_jax.eval.memorisation`, pixel levels), beside the test split's own fraction.

Accuracies are on the whole real test split; "±" is the binomial standard error of that split's size, the
noise of one number (differences between rows of one table are paired on the same test images).

Recorded runs (2 CPU cores shared with other jobs):

digits, 2026-12-01, `--dataset digits` (trains digits_vp_cond's 3000 steps: 618 s beside other jobs),
1440 samples per guidance weight w by DPM-Solver++(2M), 20 steps; test split 360 images:

  | classifier trained on     | examples | test accuracy %  | closer than training %  |
  |---------------------------|----------|------------------|-------------------------|
  | real training split       | 1437     | 98.9 +- 0.6      | 49.2 (test images)      |
  | samples, w = 1 (CAS)      | 1440     | 97.5 +- 0.8      | 30.8                    |
  | samples, w = 2 (CAS)      | 1440     | 96.4 +- 1.0      | 40.6                    |
  | samples, w = 3 (CAS)      | 1440     | 95.6 +- 1.1      | 39.9                    |

  | real data    | real only %  | + samples w=1 % | + samples w=2 % | + samples w=3 % |
  |--------------|--------------|-----------------|-----------------|-----------------|
  | 1 % (10)     | 62.5 +- 2.6  | 97.5 +- 0.8     | 96.1 +- 1.0     | 95.0 +- 1.1     |
  | 10 % (143)   | 94.2 +- 1.2  | 97.8 +- 0.8     | 97.5 +- 0.8     | 97.5 +- 0.8     |
  | 100 % (1437) | 98.9 +- 0.6  | 99.2 +- 0.5     | 98.9 +- 0.6     | 98.9 +- 0.6     |

  Sampling 13-26 s and the seven classifiers 8-19 s per weight; 12 min in all.

Fashion-MNIST, 2026-12-01: fashion_mnist_vp_cond trained for 1500 of its 6000 steps
(`--config.train.num_steps=1500`, 35 min beside other jobs; the full run is hours on 2 CPU cores), then
`--dataset fashion_mnist --workdir RUN --num_samples 2000 --guidance 1 2` and `--guidance 3 4` (200 samples
per class, 3-5 min of sampling per weight, 14 s of classifiers); test split 10000 images:

  | classifier trained on          | examples | test accuracy % | closer than training %  |
  |--------------------------------|----------|-----------------|-------------------------|
  | real training split            | 60000    | 88.0 +- 0.3     | 27.2 (test images)      |
  | real, as many as the samples   | 2000     | 82.6 +- 0.4     |                         |
  | samples, w = 1 (CAS)           | 2000     | 52.9 +- 0.5     | 5.9                     |
  | samples, w = 2 (CAS)           | 2000     | 58.1 +- 0.5     | 6.2                     |
  | samples, w = 3 (CAS)           | 2000     | 55.7 +- 0.5     | 6.0                     |
  | samples, w = 4 (CAS)           | 2000     | 52.6 +- 0.5     | 5.1                     |

  | real data      | real only % | + w=1 %     | + w=2 %     | + w=3 %     | + w=4 %     |
  |----------------|-------------|-------------|-------------|-------------|-------------|
  | 1 % (600)      | 77.8 +- 0.4 | 66.7 +- 0.5 | 70.5 +- 0.5 | 72.4 +- 0.4 | 72.0 +- 0.4 |
  | 10 % (6000)    | 85.4 +- 0.4 | 83.7 +- 0.4 | 84.0 +- 0.4 | 84.2 +- 0.4 | 83.9 +- 0.4 |
  | 100 % (60000)  | 88.0 +- 0.3 | 88.1 +- 0.3 | 88.2 +- 0.3 | 88.3 +- 0.3 | 88.3 +- 0.3 |

  A quarter-trained model: many samples are saturated texture (see samples_w2.png), so 2000 samples
  teach less than 600 real images and lower the 1 % row by 5.4 to 11.1 points.

The generative model saw the whole training split, so "1 % + samples" measures what a model trained on
all the data passes on through its samples, not a remedy for having little data: the classifier sees 10
real digits, the generator saw 1437.

Run:
  .venv/bin/python -m benchmarks.usefulness --dataset digits        # trains; 12 min on 2 shared cores
  .venv/bin/python -m benchmarks.usefulness --dataset fashion_mnist --workdir RUN   # a trained run
  .venv/bin/python -m benchmarks.usefulness --dataset digits --smoke         # smoke config, a minute
Writes `<out>/<dataset>/results.json` and `<out>/<dataset>/samples_w<guidance>.png` (one row per class).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

import jax
import numpy as np

from gl_jax import experiments, plots
from gl_jax.data.pipeline import load_arrays
from gl_jax.data.sources import open_dataset
from gl_jax.eval.memorisation import memorised_fraction, novelty
from gl_jax.eval.usefulness import as_model_input, as_stored, class_sampler, usefulness
from gl_jax.train import parallel
from gl_jax.train.loop import train_and_evaluate
from gl_jax.trained import load_run

CONFIGS = {"digits": "digits_vp_cond", "fashion_mnist": "fashion_mnist_vp_cond"}


def _closer(stored: np.ndarray, train: np.ndarray) -> float:
    ratio = novelty(np.asarray(stored, np.float32), np.asarray(train, np.float32)).ratio
    return memorised_fraction(ratio, threshold=1.0)


def _draw(family, params, spec, *, per_class: int, batch: int, seed: int, dequantized: bool):
    """`per_class` samples of every class (stored as the dataset stores images) and their labels."""
    sample = class_sampler(family, parallel.make_mesh())
    key = jax.random.key(seed)
    xs, ys = [], []
    for label in range(spec.num_classes):
        for start in range(0, per_class, batch):
            x, _ = sample(params, jax.random.fold_in(key, label * 1_000_003 + start), label, batch)
            xs.append(as_stored(x[: per_class - start], spec, dequantized=dequantized))
            ys.append(np.full((len(xs[-1]),), label, np.int32))
    return np.concatenate(xs), np.concatenate(ys)


def _percent(a: float, n: int) -> str:
    return f"{100 * a:5.1f} ± {100 * math.sqrt(max(a * (1 - a), 1e-12) / n):.1f}"


def tables(result: dict) -> str:
    """The CAS and augmentation tables of one dataset's result, as Markdown."""
    rows = result["guidance"]
    first = rows[0]["usefulness"]
    n_test = first["num_test"]
    lines = [
        f"{result['dataset']}: model {result['config']} at step {result['step']}, samples by "
        f"{result['sampler']}; classifier {first['classifier']['hidden']} MLP, "
        f"{first['classifier']['steps']} steps; test split {n_test} images.",
        "",
        "| classifier trained on | examples | test accuracy % | closer than training % |",
        "|---|---|---|---|",
        f"| real training split | {first['num_real']} | {_percent(first['real_accuracy'], n_test)} | "
        f"{100 * result['test_closer']:.1f} (test images) |",
    ]
    if first["num_samples"] < first["num_real"]:
        lines.append(
            f"| real, as many as the samples | {first['num_samples']} | "
            f"{_percent(first['real_accuracy_same_size'], n_test)} | |"
        )
    for row in rows:
        u = row["usefulness"]
        lines.append(
            f"| samples, guidance {row['guidance']:g} (CAS) | {u['num_samples']} | "
            f"{_percent(u['cas'], n_test)} | {100 * row['closer']:.1f} |"
        )
    lines += [
        "",
        "| real data | real only % | " + " | ".join(f"+ samples w={r['guidance']:g} %" for r in rows) + " |",
    ]
    lines.append("|---|---|" + "---|" * len(rows))
    curve = first["augmentation"]
    for i, fraction in enumerate(curve["fractions"]):
        mixed = " | ".join(
            _percent(r["usefulness"]["augmentation"]["real_and_synthetic"][i], n_test) for r in rows
        )
        real = _percent(curve["real"][i], n_test)
        lines.append(f"| {100 * fraction:g} % ({curve['num_real'][i]}) | {real} | {mixed} |")
    lines.append("")
    lines.append(
        f"Times: training {result['train_seconds']:.0f} s; per guidance, sampling "
        + ", ".join(f"{r['sample_seconds']:.0f}" for r in rows)
        + " s and classifiers "
        + ", ".join(f"{r['classifier_seconds']:.0f}" for r in rows)
        + " s."
    )
    return "\n".join(lines)


def run_dataset(args: argparse.Namespace, dataset: str) -> dict:
    name = CONFIGS[dataset] + (":smoke" if args.smoke else "")
    out = os.path.join(args.out, dataset)
    os.makedirs(out, exist_ok=True)
    workdir = args.workdir or os.path.join(out, "run")
    train_seconds = 0.0
    if not os.path.exists(os.path.join(workdir, "run.json")) or not args.workdir:
        config = experiments.get_config(name)
        if args.data_dir:
            config.data.data_dir = args.data_dir
        if args.train_steps:
            config.train.num_steps = args.train_steps
        config.train.eval_every = 0
        start = time.perf_counter()
        train_and_evaluate(config, workdir)  # Resumes, or says the run is finished.
        train_seconds = time.perf_counter() - start
    run = load_run(workdir)
    config, spec = run.config, run.spec
    _, sources = open_dataset(config.data.name, data_dir=args.data_dir or config.data.data_dir or None)
    train, test = load_arrays(sources["train"], spec), load_arrays(sources[config.data.eval_split], spec)
    num = min(args.num_samples or len(train["x"]), len(train["x"]))
    per_class = math.ceil(num / spec.num_classes)
    test_closer = _closer(test["x"][: per_class * spec.num_classes], train["x"])
    rows = []
    for w in args.guidance:
        family = dataclasses.replace(run.family, guidance=w)
        start = time.perf_counter()
        stored, labels = _draw(
            family,
            run.params,
            spec,
            per_class=per_class,
            batch=min(per_class, args.batch),
            seed=config.seed,
            dequantized=config.data.dequantize,
        )
        sample_seconds = time.perf_counter() - start
        grid = np.concatenate([stored[labels == c][:10] for c in range(spec.num_classes)])
        plots.save_image_grid(os.path.join(out, f"samples_w{w:g}.png"), as_model_input(grid, spec))
        start = time.perf_counter()
        entry = usefulness(
            as_model_input(train["x"], spec),
            train["label"],
            as_model_input(stored, spec),
            labels,
            as_model_input(test["x"], spec),
            test["label"],
            num_classes=spec.num_classes,
        )
        classifier_seconds = time.perf_counter() - start
        row = {
            "guidance": w,
            "usefulness": entry,
            "closer": _closer(stored, train["x"]),
            "sample_seconds": sample_seconds,
            "classifier_seconds": classifier_seconds,
        }
        rows.append(row)
        print(f"{dataset} w={w:g}: CAS {entry['cas']:.4f} (real {entry['real_accuracy']:.4f})", flush=True)
    s = config.sample
    result = {
        "dataset": dataset,
        "config": name,
        "workdir": os.path.abspath(workdir),
        "step": run.step,
        "sampler": f"{s.sampler} {s.steps} steps, threshold {s.threshold}",
        "train_seconds": train_seconds,
        "test_closer": test_closer,
        "guidance": rows,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", choices=sorted(CONFIGS), action="append", help="repeatable; default digits"
    )
    parser.add_argument("--workdir", default="", help="a trained run of the dataset's config (else trained)")
    parser.add_argument("--out", default="runs/bench_usefulness")
    parser.add_argument("--data_dir", default="", help="TFDS data_dir (default: $TFDS_DATA_DIR)")
    parser.add_argument("--train_steps", type=int, default=0, help="override config.train.num_steps")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--num_samples", type=int, default=0, help="default: the training split's size")
    parser.add_argument("--batch", type=int, default=500, help="samples per sampler call")
    parser.add_argument("--smoke", action="store_true", help="the configs' smoke variants")
    args = parser.parse_args()
    datasets = args.dataset or ["digits"]
    if args.workdir and len(datasets) > 1:
        parser.error("--workdir names one run: give one --dataset with it.")
    for dataset in datasets:
        print(tables(run_dataset(args, dataset)), flush=True)


if __name__ == "__main__":
    main()
