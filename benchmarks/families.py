"""P7: the model families on Fashion-MNIST, each trained for the same wall-clock budget through the one
shared train step, then compared on test bits/dim, a Fréchet distance of samples, and a picture.

Families and their configs (experiments/fashion_mnist_*.py): score diffusion (`_vp`), GAN (`_gan`), VAE
(`_vae`), autoregressive transformer (`_ar`) and latent diffusion (`_latent`, on the VAE this run trains
first). Each trains for `--budget_s` seconds of steps (the first step, which compiles, is not counted),
with its own optimizer (`family.optimizer(base)`), a constant learning rate after the config's warm-up (the
run's length is not known in advance, so no cosine decay), and is evaluated with its EMA parameters when
the run is long enough for the EMA to have moved (steps (1 - decay) >= 5), else with the raw ones.

Columns:
  bits/dim  on `--num_eval` test images, where defined: diffusion by the probability-flow ODE
            (`gl_jax.likelihood.ode_log_likelihood`, Hutchinson trace, one Rademacher probe, tolerances
            `--ode_tol`, on uniformly dequantized data; Song et al. 2021), the VAE by its IWAE bound with
            `--iwae_k` samples (Burda et al. 2016), the transformer exactly; all in bits per dimension of the
            256-level data (`gl_jax.likelihood.bits_per_dim` conventions). GANs and latent diffusion: "-".
  FD        the Fréchet Inception distance of `--num_fid` samples against as many test images (TF-FID
            InceptionV3, `gl_jax.eval`; few samples bias it upwards, so compare rows, not papers).
  train s   the training wall time (steps after the first), and the steps it bought.

Diffusion and latent diffusion sample with the config's sampler at `--sample_steps` steps.

Recorded run (2026-11-26, `--budget_s 150 --num_fid 500 --num_eval 128`, load average 3.3-4.5 on the 2
cores from other jobs, so few steps each; a budget this small ranks how fast each family starts learning,
not what it reaches):

  family          steps  train s  bits/dim     FD
  diffusion          60      174    11.909  435.8
  gan                60      201         -  357.9
  vae               180      166     3.976  252.7
  autoregressive     40      228     5.162  410.8
  latent            220      157         -  324.3

Run:
  .venv/bin/python -m benchmarks.families                        # 10 minutes per family, ~1.5 h on 2 cores
  .venv/bin/python -m benchmarks.families --tiny                 # smoke configs, seconds per family
Writes `<out>/families.png` (one row of samples per family) and `<out>/results.json`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from gl_jax import experiments, plots
from gl_jax.data.pipeline import load_arrays, make_dataset
from gl_jax.data.sources import open_dataset
from gl_jax.families import build_family
from gl_jax.families.autoregressive import Autoregressive
from gl_jax.families.diffusion import ScoreDiffusion
from gl_jax.families.vae import VAE
from gl_jax.likelihood import bits_per_dim, ode_log_likelihood, uniform_dequantize
from gl_jax.train import TrainState, make_optimizer, make_train_step, parallel
from gl_jax.train.checkpoint import Checkpointer
from gl_jax.train.saved_params import load_params

# Row name -> experiment file; the VAE runs before latent diffusion, which reads its checkpoint.
CONFIGS = {
    "diffusion": "fashion_mnist_vp",
    "gan": "fashion_mnist_gan",
    "vae": "fashion_mnist_vae",
    "autoregressive": "fashion_mnist_ar",
    "latent": "fashion_mnist_latent",
}


def load_config(name: str, variant: str) -> ml_collections.ConfigDict:
    return experiments.get_config(f"{name}:{variant}")


def train(config, *, budget_s: float, max_steps: int, data_dir: str | None):
    """Trains `config` for `budget_s` seconds of steps (or `max_steps`); (family, state, spec, info)."""
    spec, sources = open_dataset(config.data.name, data_dir=data_dir)
    family = build_family(config, spec, load_params=load_params)
    data = make_dataset(
        load_arrays(sources["train"], spec),
        spec,
        batch_size=config.data.batch_size,
        seed=config.seed,
        flip=config.data.flip,
        dequantize=config.data.dequantize,
    )
    optim = {k: v for k, v in config.optim.items() if k not in ("grad_accum_steps", "schedule")}
    base = functools.partial(make_optimizer, **optim, schedule="constant", total_steps=max(max_steps, 1))
    tx = family.optimizer(base)
    mesh = parallel.make_mesh()
    key = jax.random.key(config.seed)
    state = parallel.init_replicated(lambda k: TrainState.create(params=family.init(k), tx=tx), key, mesh)
    step = parallel.compile_train_step(make_train_step(family.loss, ema_decay=config.train.ema_decay), mesh)
    step_key = jax.random.fold_in(key, 1)
    start = time.perf_counter()
    state, metrics = step(state, parallel.shard_batch(data[0], mesh), step_key)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    steps, start = 1, time.perf_counter()
    while steps < max_steps and time.perf_counter() - start < budget_s:
        state, metrics = step(state, parallel.shard_batch(data[steps], mesh), step_key)
        steps += 1
        if steps % 20 == 0:
            jax.block_until_ready(metrics)  # Keep the time check honest (dispatch is asynchronous).
    jax.block_until_ready(state)
    info = {
        "steps": steps,
        "train_s": time.perf_counter() - start,
        "compile_s": compile_s,
        "final_loss": float(metrics["loss"]),
        "ema": steps * (1.0 - config.train.ema_decay) >= 5.0,
    }
    return family, state, spec, info


def test_images(spec, data_dir: str | None, num: int) -> np.ndarray:
    """The first `num` test images as integers `[num, H, W, C]` (uint8)."""
    _, sources = open_dataset(spec.name, data_dir=data_dir)
    return load_arrays(sources["test"], spec)["x"][:num]


def test_bits_per_dim(family, params, k: np.ndarray, spec, args) -> float | None:
    """Test bits/dim where the family defines a likelihood (see the module docstring), else None."""
    levels, dims = spec.levels, math.prod(spec.shape)
    clean = jnp.asarray(2.0 * k / (levels - 1) - 1.0, jnp.float32)  # The pipeline's images.
    batch = args.eval_batch
    values = []
    for i in range(0, len(k), batch):
        key = jax.random.key(1000 + i)
        if isinstance(family, ScoreDiffusion):
            x = uniform_dequantize(key, jnp.asarray(k[i : i + batch]), levels=levels)
            result = _ode_logp(family, params, x, key, args.ode_tol)
            values.append(np.asarray(bits_per_dim(result, num_dims=dims, levels=levels)))
        elif isinstance(family, VAE):
            fn = jax.jit(functools.partial(family.log_likelihood, num_samples=args.iwae_k))
            iwae, _ = fn(params, clean[i : i + batch], key)
            values.append(np.asarray(family.bits_from_nats(iwae)))
        elif isinstance(family, Autoregressive):
            nll = jax.jit(family.nll)(params, clean[i : i + batch])
            values.append(np.asarray(nll) / (dims * math.log(2.0)))
        else:
            return None
    return float(np.mean(np.concatenate(values)))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _ode_logp(family, params, x, key, tol):
    return ode_log_likelihood(key, family.score_fn(params), family.sde, x, rtol=tol, atol=tol).logp


def frechet_distance(family, params, k: np.ndarray, args) -> float | None:
    """FID of `--num_fid` samples against as many test images, or None without the Inception weights."""
    from gl_jax.eval import dataset_statistics, inception_extractor, sampler_scores

    try:
        extractor = _extractor_cache.get("fn") or _extractor_cache.setdefault("fn", inception_extractor())
    except (FileNotFoundError, ImportError) as e:
        print(f"  FD skipped: no FID Inception weights ({e}).")
        return None
    images = 2.0 * k[: args.num_fid].astype(np.float32) / 255.0 - 1.0
    cache = os.path.join(args.out, f"fashion_mnist_test_{len(images)}.npz")
    reference = dataset_statistics([images], extractor=extractor, cache_path=cache)
    sample = jax.jit(family.sample, static_argnums=(2,))
    batch = min(args.num_fid, args.sample_batch)
    scores = sampler_scores(
        lambda key, n: sample(params, key, n),
        jax.random.key(7),
        num=args.num_fid,
        batch_size=batch,
        extractor=extractor,
        reference=reference,
    )
    return scores.fid


_extractor_cache: dict = {}


def picture(rows: dict[str, np.ndarray], path: str, *, label_width: int = 110, scale: int = 2) -> None:
    """One row of samples per family, its name on the left."""
    strips = []
    for name, samples in rows.items():
        grid = plots.image_grid(samples, ncols=len(samples))  # uint8 [h, w, C]
        img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).convert("RGB")
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        strip = Image.new("RGB", (label_width + img.width, img.height), "white")
        strip.paste(img, (label_width, 0))
        ImageDraw.Draw(strip).text((4, img.height // 2 - 6), name, fill="black")
        strips.append(strip)
    out = Image.new("RGB", (max(s.width for s in strips), sum(s.height for s in strips)), "white")
    y = 0
    for strip in strips:
        out.paste(strip, (0, y))
        y += strip.height
    out.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget_s", type=float, default=600.0, help="training seconds per family")
    parser.add_argument("--max_steps", type=int, default=10**9, help="cap on steps per family")
    parser.add_argument("--families", default=",".join(CONFIGS), help="comma-separated rows")
    parser.add_argument("--num_eval", type=int, default=256, help="test images for bits/dim")
    parser.add_argument("--eval_batch", type=int, default=64)
    parser.add_argument("--num_fid", type=int, default=1000, help="samples (and test images) for FD")
    parser.add_argument("--sample_batch", type=int, default=100)
    parser.add_argument("--sample_steps", type=int, default=100, help="diffusion sampler steps")
    parser.add_argument("--iwae_k", type=int, default=64)
    parser.add_argument("--ode_tol", type=float, default=1e-4)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default="runs/bench_families")
    parser.add_argument("--tiny", action="store_true", help="smoke configs and budgets: checks it runs")
    args = parser.parse_args()
    variant = ""
    if args.tiny:
        variant = "smoke"
        args.budget_s, args.num_eval, args.eval_batch = min(args.budget_s, 5.0), 8, 8
        args.num_fid, args.sample_batch, args.sample_steps = 16, 16, 5
        args.iwae_k, args.ode_tol = 4, 1e-2
    os.makedirs(args.out, exist_ok=True)
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    if "latent" in names and "vae" not in names:
        names.insert(names.index("latent"), "vae")  # Latent diffusion needs this run's VAE.
    print(f"P7: Fashion-MNIST, {args.budget_s:.0f} s of training per family on {jax.devices()[0].platform}")
    results, rows, k = {}, {}, None
    for name in names:
        config = load_config(CONFIGS[name], variant)
        if name == "latent":
            config.latent.vae_checkpoint = os.path.join(args.out, "vae")
            config.latent.allow_random_vae = False
        if "sample" in config and "steps" in config.sample:
            config.sample.steps = args.sample_steps
        family, state, spec, info = train(
            config, budget_s=args.budget_s, max_steps=args.max_steps, data_dir=args.data_dir
        )
        if name == "vae":  # The checkpoint latent diffusion reads, written as the trainer writes it.
            checkpointer = Checkpointer(os.path.join(args.out, "vae", "checkpoints"), max_to_keep=1)
            checkpointer.save(state, {})
            checkpointer.close()
        params = state.ema_params if info["ema"] else state.params
        if k is None:
            k = test_images(spec, args.data_dir, max(args.num_eval, args.num_fid))
        start = time.perf_counter()
        bpd = test_bits_per_dim(family, params, k[: args.num_eval], spec, args)
        info["eval_s"] = time.perf_counter() - start
        info["bits_per_dim"] = bpd
        info["fd"] = frechet_distance(family, params, k, args)
        rows[name] = np.asarray(jax.jit(family.sample, static_argnums=(2,))(params, jax.random.key(3), 10))
        results[name] = info
        bpd_text = "-" if bpd is None else f"{bpd:.3f}"
        steps, seconds = info["steps"], info["train_s"]
        print(f"  {name}: {steps} steps in {seconds:.0f} s, bits/dim {bpd_text}, FD {info['fd']}", flush=True)
    picture(rows, os.path.join(args.out, "families.png"))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    header = f"{'family':<16}{'steps':>8}{'train s':>9}{'bits/dim':>10}{'FD':>9}  params"
    print("\n" + header + "\n" + "-" * len(header))
    for name, r in results.items():
        bpd = "-" if r["bits_per_dim"] is None else f"{r['bits_per_dim']:.3f}"
        fd = "-" if r["fd"] is None else f"{r['fd']:.1f}"
        print(
            f"{name:<16}{r['steps']:>8}{r['train_s']:>9.0f}{bpd:>10}{fd:>9}  {'ema' if r['ema'] else 'raw'}"
        )
    print(f"\nSamples: {os.path.join(args.out, 'families.png')}")


if __name__ == "__main__":
    main()
