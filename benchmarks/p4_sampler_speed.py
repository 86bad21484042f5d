"""P4: a 50-step DDIM sampler (eta = 0) wholly under one `jax.jit` vs diffusers' per-step Python loop.

Both sides sample from the same network: DDPM's CIFAR-10 U-Net (multipliers 1-2-2-2, 2 residual blocks,
attention at 16x16) at a base width of `--ch` channels, 64 by default instead of the published 128 so that
a run takes minutes on 2 CPU cores (the published width costs 4x the time on both sides: pass `--ch 128`).
gl_jax builds it as `UNet.from_variant("ddpm-cifar10", channels=...)` inside the diffusion family of
score_sde's `vp/ddpm` row (DDPM's 1,000 linear betas), diffusers as `UNet2DModel` with the same configuration
(`benchmarks.p3_train_throughput.diffusers_ddpm_unet`); random weights, nothing downloaded; parameter
counts are printed and must match.

  * gl_jax: `jax.jit` of `ScoreDiffusion.sample_counted(params, key, batch)` with the sampler
    `functools.partial(ddim, steps=50, eta=0.0)` bound (`with_sampler`): the prior draw, the 50 network
    evaluations and DDIM updates in one `lax.scan`, one compiled call. Compilation is timed separately
    and excluded from the rate.
  * diffusers: `DDIMPipeline(unet, DDIMScheduler(1000 linear betas))(batch_size, num_inference_steps=50,
    eta=0.0, output_type="np")`: its Python loop calls the network and `DDIMScheduler.step` once per step
    under `torch.no_grad()`, network in eval mode (dropout off on both sides), progress bar off.

The grids differ slightly (gl_jax: 51 times uniform in t from 1 to 1/1000; diffusers: "leading" spacing,
timesteps 980, 960, ..., 0), which does not change the cost. Both run in float32.

Method (`benchmarks/_timing.py`): one process; the two samplers alternate (gl_jax, diffusers, diffusers,
gl_jax, ...) for `--repeats` rounds after a warm-up call each, with a pause before each call so that one
framework's spinning thread pool does not take the cores of the next; samples/s = batch / median wall
time; ratio = gl_jax's samples/s over diffusers' (ratio of medians, and of the extremes). To show where the
time goes, one network evaluation on the same batch is also timed alone in each framework (jitted apply;
`unet(x, t)` under no_grad), and "loop overhead" = sampler time - 50 x that evaluation, per step. PyTorch
runs at its default threading (2 intra-op threads here), on the same cores as XLA; `--torch-threads N`
limits it for a separate, not like-for-like, row.

Recorded runs (2026-12-03, ch 64, batch 4, 5 rounds, quiet: load 0.49 and 0.47 at the start, two
consecutive runs): gl_jax 6.80 s per 50-step batch (6.48-7.52) then 7.42 (6.55-8.79), one network
evaluation 142 then 147 ms; diffusers 5.60 s (5.46-5.90) then 5.99 (5.82-6.83), evaluation 114 then
119 ms: 0.82x then 0.81x. The loops cost a few ms per step on both sides (within the noise of the
evaluation's time), so the ratio is that of the two networks' forward passes: XLA:CPU's U-Net forward
is ~1.25x slower than PyTorch's here, and no loop removal can make up for that. (The 1.22x recorded on
2026-11-26 was against PyTorch on 1 thread on a loaded machine.)

What moves it: XLA:CPU's YNNPACK convolutions. With them off, run as
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION \
    .venv/bin/python -m benchmarks.p4_sampler_speed
(XLA's Eigen convolutions instead), the same day: 1.18x (0.96-1.38), one evaluation 133 against 146 ms;
with YNNPACK's dots off too, 1.18x (1.04-1.28) and 1.15x (0.99-1.33) in two runs, evaluation 102 and 124
ms against 118 and 155 ms. Still short of the 1.5x goal.

With gl_jax's XLA default (`gl_jax/xla_flags.py`, applied at the top of this file; the runs above are
XLA's own default, now `GL_JAX_XLA_DEFAULTS=0`), two consecutive runs the afternoon of 2026-12-03 (load
0.49 and 0.18 at the start; the machine ran ~1.3x slower than that morning for both sides): gl_jax 7.16 s
(6.13-7.64) then 7.23 (6.92-7.45), one evaluation 133 then 149 ms; diffusers 7.55 (7.26-8.12) then 8.15
(7.67-8.89), evaluation 166 then 182 ms: 1.05x (0.95-1.32) then 1.13x (1.03-1.29).

Run (after `make bench-install`; ~4 minutes at the defaults on 2 quiet CPU cores, after the load settles):
  .venv/bin/python -m benchmarks.p4_sampler_speed [--ch 64] [--batch 4] [--repeats 5] [--torch-threads 0]
"""

from __future__ import annotations

import argparse
import functools
import time

from gl_jax import xla_flags

xla_flags.apply_defaults()  # gl_jax's XLA defaults, as the gl-jax command runs (unless XLA_FLAGS sets them).

import jax  # noqa: E402 - after the XLA defaults, which XLA reads when its backend starts.
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import _timing  # noqa: E402
from benchmarks.p3_train_throughput import GLJAX_ROW, IMAGE_SHAPE, diffusers_ddpm_unet  # noqa: E402
from gl_jax.families import build_family  # noqa: E402
from gl_jax.published_configs import score_sde_cifar10  # noqa: E402
from gl_jax.samplers import SAMPLERS  # noqa: E402
from gl_jax.spec import DataSpec  # noqa: E402

STEPS = 50


def bench(ch: int, batch: int, repeats: int, torch_threads: int) -> dict:
    import torch
    from diffusers import DDIMPipeline, DDIMScheduler

    if torch_threads:
        torch.set_num_threads(torch_threads)

    # gl_jax: the family of score_sde's vp/ddpm row with a `ch`-wide network.
    config = score_sde_cifar10(GLJAX_ROW)
    config.model.channels = ch
    family = build_family(config, DataSpec("cifar10-shaped", "image", IMAGE_SHAPE, 256, None, {}))
    params = jax.jit(family.init)(jax.random.key(0))
    ours_params = sum(x.size for x in jax.tree.leaves(params))
    ddim = family.with_sampler(functools.partial(SAMPLERS["ddim"], steps=STEPS, eta=0.0), threshold="none")
    sample = jax.jit(lambda p, k: ddim.sample_counted(p, k, batch).x)
    key = jax.random.key(1)
    start = time.perf_counter()
    compiled = sample.lower(params, key).compile()
    compile_s = time.perf_counter() - start
    ours = lambda: jax.block_until_ready(compiled(params, key))

    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, *IMAGE_SHAPE)), jnp.float32)
    t = jnp.full((batch,), 0.5)
    predict = jax.jit(family.predict).lower(params, x, t).compile()
    ours_eval = lambda: jax.block_until_ready(predict(params, x, t))

    # diffusers: the same network in its DDIM pipeline.
    torch.manual_seed(0)
    unet = diffusers_ddpm_unet(ch=ch).eval()
    peer_params = sum(p.numel() for p in unet.parameters())
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear"))
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    peer = lambda: pipe(
        batch_size=batch, generator=generator, eta=0.0, num_inference_steps=STEPS, output_type="np"
    )
    xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
    tt = torch.full((batch,), 500)

    def peer_eval():
        with torch.no_grad():
            unet(xt, tt)

    walls = _timing.interleave({"ours": ours, "peer": peer}, repeats=repeats)
    evals = _timing.interleave({"ours_eval": ours_eval, "peer_eval": peer_eval}, repeats=3 * repeats)
    return dict(
        ch=ch,
        batch=batch,
        params=(ours_params, peer_params),
        compile_s=compile_s,
        timings={**walls, **evals},
        torch_threads=torch.get_num_threads(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ch", type=int, nargs="+", default=[64], help="Base width(s) of the U-Net.")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="PyTorch intra-op threads; 0 (the headline): its default, all cores, as XLA uses.",
    )
    args = parser.parse_args()
    machine = _timing.Machine()
    results = [bench(ch, args.batch, args.repeats, args.torch_threads) for ch in args.ch]
    machine.stop()
    threads = results[0]["torch_threads"]
    cores = _timing.same_cores_note() if not args.torch_threads else f"PyTorch limited to {threads} thread(s)"
    print(
        f"DDIM, {STEPS} steps, eta = 0, batch {args.batch}, float32; {args.repeats} interleaved runs each "
        f"after a warm-up (median, range min-max); {machine.line()}; {cores}; JAX {jax.__version__}.\n"
    )
    header = (
        "U-Net (ch)",
        "parameters",
        "implementation",
        "wall (s)",
        "range (s)",
        "samples/s",
        "ratio (goal >= 1.5x)",
        "one eval (ms)",
        "loop overhead / step (ms)",
        "compile (s)",
    )
    rows = []
    for res in results:
        t = res["timings"]
        ratio = _timing.ratio_cell(t["ours"], t["peer"])
        for who, name in (("ours", "gl_jax: one jit (lax.scan)"), ("peer", "diffusers DDIMPipeline loop")):
            wall, one_eval = t[who].median, t[f"{who}_eval"].median
            rows.append(
                (
                    str(res["ch"]),
                    f"{res['params'][0 if who == 'ours' else 1]:,}",
                    name,
                    f"{wall:.2f}",
                    f"{t[who].low:.2f}-{t[who].high:.2f}",
                    f"{res['batch'] / wall:.3f}",
                    ratio if who == "ours" else "1.00x",
                    f"{1e3 * one_eval:.1f}",
                    f"{1e3 * (wall - STEPS * one_eval) / STEPS:.1f}",
                    f"{res['compile_s']:.1f}" if who == "ours" else "-",
                )
            )
    print(_timing.table(header, rows))
    print(
        "\nratio = gl_jax samples/s / diffusers samples/s. loop overhead / step = (wall - 50 x one eval) / 50"
        ": what a step costs besides the network (negative values are timing noise). When the network "
        "dominates, the ratio tends to the ratio of the two frameworks' network evaluations."
    )


if __name__ == "__main__":
    main()
