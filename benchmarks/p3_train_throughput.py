"""P3: training throughput of DDPM's CIFAR-10 U-Net -- gl_jax's compiled train step vs diffusers + PyTorch.

Both sides train the same network: gl_jax's `UNet.from_variant("ddpm-cifar10")` and diffusers'
`UNet2DModel` built from the DDPM CIFAR-10 configuration (channels 128, multipliers 1-2-2-2, 2 residual
blocks, attention at 16x16, dropout 0.1; random initialisation, nothing downloaded): 35,746,307 parameters
each, checked at start-up. One step is, on both sides, what a training loop runs per batch:

  * gl_jax: the train step of `gl_jax.train` for score_sde's `vp/ddpm` row (`make_train_step` over the
    diffusion family's loss: DDPM's 1,000 discrete levels, eps prediction, mean squared error, dropout
    with per-example keys; Adam lr 2e-4 with global-norm clipping at 1; EMA 0.9999; the non-finite
    guard), compiled once by `compile_train_step` (jit, state donated);
  * PyTorch: diffusers' own training recipe (`examples/unconditional_image_generation`): random levels,
    `DDPMScheduler.add_noise`, `UNet2DModel(...).sample`, `F.mse_loss` against the noise, backward,
    `clip_grad_norm_(1.0)`, `torch.optim.Adam(lr=2e-4, foreach=True)`, `EMAModel(decay=0.9999,
    foreach=True).step`; model in train mode (dropout on).

Data: one fixed batch of uniform noise in [-1, 1] of CIFAR-10's shape (32x32x3), the same on both sides;
no input pipeline is timed. Float32 everywhere.

Method: each framework runs in a fresh worker process of its own, started by this script, and the script
asks them for steps in turn (gl_jax, PyTorch, PyTorch, gl_jax, ...), so both see the same machine load;
the step time is the median over `--repeats` steps after one warm-up step (which, for gl_jax, follows the
compilation). images/s = batch / median step time; the ratio is gl_jax's images/s over PyTorch's (goal:
>= 1.0). The 1-minute load average is printed before and after: on a shared machine the absolute numbers
move with it, the interleaved ratio much less.

Memory: each worker reads its own resident set (`/proc/self/status`): RSS after imports (the baseline),
the high-water mark VmHWM after set-up (model build, initialisation, and for gl_jax XLA's compilation,
plus one step), then resets the high-water mark (`echo 5 > /proc/self/clear_refs`) and reads it again after
the timed steps: "peak RSS, steps" is the most memory the process held while training, and "step memory"
is that minus the baseline. For gl_jax the compiled executable's own plan is printed too
(`memory_analysis()`: arguments + outputs - donated aliases + temporaries). tracemalloc sees neither
framework's buffers, so it is not used.

Where gl_jax's time goes (`--profile DIR`, a jax.profiler trace of one step joined to the optimised HLO,
batch 8, load ~6 on the 2 cores): 67 % in convolutions, which XLA:CPU already hands to YNNPACK
("ynn_fusion", NHWC/HWIO, the forward, input-gradient and weight-gradient convolutions alike); 8 % dots
(attention, 1x1 shortcuts, time embedding); 5 % transposes feeding the weight-gradient convolutions; 2 %
the non-finite guard's `where` over the 143 MB state x 3; the rest small elementwise fusions. One 3x3
convolution 256 -> 256 at 32x32, batch 8, measured alone: forward 45 GFLOP/s in JAX and 47 in PyTorch,
forward + backward 44.5 GFLOP/s in JAX (NHWC; 44.2 with NCHW dimension numbers: XLA picks the physical
layout itself), 36 in PyTorch NCHW and 48 in PyTorch channels_last. The convolution kernels are at parity;
the step-level difference comes from the rest of the step (see the attempts below and the report).

Attempts (`--attempts`: each is a fresh gl_jax worker interleaved with the same PyTorch worker, batch 8,
3 repeats; see ATTEMPTS for the exact settings) prints one row per attempt with its ratio.

Recorded runs (2026-12-03, batch 8, 5 interleaved steps, quiet: load 0.49 and 0.46 at the start, two
consecutive runs; PyTorch at its default 2 intra-op threads, the cores XLA uses): gl_jax 4.22 s per step
(3.51-4.42) then 3.38 (3.32-3.65); PyTorch 2.72 (2.42-2.96) then 2.48 (2.39-2.78): 0.64x (0.55-0.84) then
0.73x (0.66-0.84), each inside the other's range. Step memory: gl_jax 1,840 MiB (XLA's plan 1,218 MiB),
PyTorch 1,176 MiB. XLA's cost analysis: 282 GFLOP per step. (The 0.84x recorded on 2026-11-26 was against
PyTorch limited to 1 thread while gl_jax had both cores, on a loaded machine: not a like-for-like figure.)
`--attempts --only default "YNNPACK off" FAST_RUNTIME` the same day (quiet, one PyTorch worker at its
default 2 threads; gl_jax s / PyTorch s per step): default 3.30 / 2.38, 0.72x; YNNPACK off (Eigen
convolutions and dots) 2.72 / 2.94, 1.08x; FAST_RUNTIME preset 3.96 / 3.13, 0.79x. A second run of the
first two: default 3.78 / 2.59, 0.69x; YNNPACK off 2.94 / 2.76, 0.94x. So Eigen's convolutions make
gl_jax's step 18-22 % faster (0.69-0.72x -> 0.94-1.08x), the one setting that moves P3 beyond the noise;
it is also what moves P4 (1.15-1.18x, see there). "YNNPACK convolutions off" keeps YNNPACK's dots, which
the MLP-sized P2 prefers (with both off, P2's ratios were 0.1-0.3x lower, inside their ranges).
Older `--attempts`, under load (2026-11-26, load 2.5-3.2, PyTorch on 1 thread; gl_jax s / PyTorch s per
step, ratio): default 4.13 / 3.57, 0.86x;
YNNPACK off 3.60 / 3.53, 0.98x (the fastest gl_jax step); YNNPACK elementwise + reduce fusions 4.36 /
4.33, 0.99x; fast math 0.85x; vector width 512 0.88x; FAST_RUNTIME preset 4.11 / 4.66, 1.13x; gl_jax on
1 core 0.83x; matmul precision bf16 0.87x; bf16 compute 3.91 / 3.50, 0.90x; remat dots 1.10x (PyTorch's
step was slow in that pair); remat full 0.71x. The spread of one setting's steps (2.1-4.2 s for the
default) is larger than the differences between settings: on this shared 2-core machine none is a
clear win, and none reaches 1.0x beyond the noise.

With gl_jax's XLA default (`gl_jax/xla_flags.py`, applied by the gl_jax worker; the runs above are XLA's
own default, now `GL_JAX_XLA_DEFAULTS=0`), two consecutive runs the afternoon of 2026-12-03 (load 0.46 and
0.47 at the start): gl_jax 3.20 s per step (2.93-3.80) then 3.57 (3.39-4.17); PyTorch 3.14 (3.05-3.22)
then 3.41 (3.08-3.98): 0.98x (0.80-1.10) then 0.95x (0.74-1.18). Step memory 1,855 MiB (XLA's plan 1,218).

Run (after `make bench-install`; a few minutes on 2 CPU cores, most of it XLA's compilation and
PyTorch's steps):
  .venv/bin/python -m benchmarks.p3_train_throughput [--batch 8] [--repeats 5]
  .venv/bin/python -m benchmarks.p3_train_throughput --attempts      # ~25 min: flags, dtypes, remat
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import _timing

IMAGE_SHAPE = (32, 32, 3)
DDPM_CIFAR10_PARAMS = 35_746_307
GLJAX_ROW = "vp/ddpm"  # score_sde's row that trains DDPM's network on DDPM's discrete chain.


def diffusers_ddpm_unet(ch: int = 128, dropout: float = 0.1):
    """diffusers' `UNet2DModel` in DDPM's CIFAR-10 configuration (random weights, no download).

    With `ch=128` this is the `google/ddpm-cifar10-32` architecture, 35,746,307 parameters, the network
    of gl_jax's `UNet.from_variant("ddpm-cifar10")`; other `ch` scale every width like gl_jax's `channels=...`
    override (GroupNorm keeps 32 groups here, gl_jax uses min(C / 4, 32): same parameters, same cost).
    """
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=IMAGE_SHAPE[0],
        in_channels=IMAGE_SHAPE[2],
        out_channels=IMAGE_SHAPE[2],
        block_out_channels=(ch, 2 * ch, 2 * ch, 2 * ch),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=None,  # One head over all channels, as DDPM.
        norm_eps=1e-6,
        dropout=dropout,
    )


# --- memory of this process -------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def _reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --- workers -----------------------------------------------------------------------------------------
# A worker builds its side, then answers lines on stdin: "step" -> one timed step, "quit" -> its memory
# report. Protocol lines on stdout start with "@@ "; anything else a library prints is ignored.


def _say(kind: str, payload) -> None:
    print("@@", kind, json.dumps(payload), flush=True)


def _serve(step, info: dict) -> None:
    info["rss_setup_peak_mib"] = _status_kib("VmHWM") / 1024
    try:  # Hand memory freed during set-up (e.g. by the compiler) back to the system first.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    info["rss_ready_mib"] = _status_kib("VmRSS") / 1024
    info["peak_reset"] = _reset_peak()
    _say("ready", info)
    for line in sys.stdin:
        if line.strip() == "step":
            start = time.perf_counter()
            step()
            _say("time", time.perf_counter() - start)
        elif line.strip() == "quit":
            _say("memory", {"rss_steps_peak_mib": _status_kib("VmHWM") / 1024})
            return


def _jax_worker(args) -> None:
    if args.cpus:
        # Before XLA starts: it sizes its thread pool by the CPUs this process may run on.
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cpus]))
    from gl_jax import xla_flags

    xla_flags.apply_defaults()  # As the gl-jax command runs (unless XLA_FLAGS sets the option).
    import jax
    import numpy as np

    if args.matmul_precision:
        jax.config.update("jax_default_matmul_precision", args.matmul_precision)

    from gl_jax.families import build_family
    from gl_jax.published_configs import score_sde_cifar10
    from gl_jax.spec import DataSpec
    from gl_jax.train import parallel
    from gl_jax.train.optim import make_optimizer
    from gl_jax.train.precision import COMPUTE_DTYPES
    from gl_jax.train.state import TrainState
    from gl_jax.train.step import REMAT_POLICIES, make_train_step

    rss_base = _status_kib("VmRSS") / 1024
    start = time.perf_counter()
    config = score_sde_cifar10(GLJAX_ROW)
    config.data.batch_size = args.batch
    if args.dropout is not None:
        config.model.dropout = args.dropout
    spec = DataSpec("cifar10-shaped noise", "image", IMAGE_SHAPE, 256, None, {})
    family = build_family(config, spec)
    optim = {k: v for k, v in config.optim.items() if k != "grad_accum_steps"}
    tx = make_optimizer(**optim, total_steps=config.train.num_steps)
    mesh = parallel.make_mesh()
    state = parallel.init_replicated(
        lambda k: TrainState.create(params=family.init(k), tx=tx), jax.random.key(0), mesh
    )
    params = sum(x.size for x in jax.tree.leaves(state.params))
    train_step = make_train_step(
        family.loss,
        ema_decay=config.train.ema_decay,
        compute_dtype=COMPUTE_DTYPES[args.compute_dtype],
        remat_policy=REMAT_POLICIES[args.remat],
    )
    step_fn = parallel.compile_train_step(train_step, mesh)
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (args.batch, *IMAGE_SHAPE)).astype(np.float32)
    batch = parallel.shard_batch({"x": x}, mesh)
    key = jax.random.key(1)
    build = time.perf_counter() - start
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    plan = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
    plan += mem.temp_size_in_bytes
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    box = {"state": state}

    def step():
        box["state"], metrics = compiled(box["state"], batch, key)
        jax.block_until_ready((box["state"], metrics))

    if args.profile:
        step()
        jax.profiler.start_trace(args.profile)
        step()
        jax.profiler.stop_trace()
    step()  # Warm-up.
    info = {
        "params": int(params),
        "build_s": build,
        "compile_s": compile_s,
        "rss_base_mib": rss_base,
        "xla_plan_mib": plan / 2**20,
        "xla_temp_mib": mem.temp_size_in_bytes / 2**20,
        "gflop_per_step": float(cost.get("flops", 0.0)) / 1e9 if cost else 0.0,
        "threads": "XLA intra-op pool (all cores)",
    }
    _serve(step, info)


def _torch_worker(args) -> None:
    rss_base = _status_kib("VmRSS") / 1024
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    if args.torch_threads[0]:
        torch.set_num_threads(args.torch_threads[0])
    rss_base = _status_kib("VmRSS") / 1024
    torch.manual_seed(0)
    start = time.perf_counter()
    dropout = 0.1 if args.dropout is None else args.dropout
    net = diffusers_ddpm_unet(dropout=dropout).train()
    layout = torch.channels_last if args.torch_channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    params = sum(p.numel() for p in net.parameters())
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, foreach=True)
    ema = EMAModel(net.parameters(), decay=0.9999, foreach=True)
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (args.batch, *IMAGE_SHAPE)).astype(np.float32)
    clean = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=layout)  # [B, C, H, W]
    build = time.perf_counter() - start

    def step():
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],))
        noisy = scheduler.add_noise(clean, noise, timesteps)
        loss = F.mse_loss(net(noisy, timesteps).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(net.parameters())

    step()  # Warm-up.
    info = {
        "params": int(params),
        "build_s": build,
        "compile_s": 0.0,
        "rss_base_mib": rss_base,
        "threads": f"torch intra-op {torch.get_num_threads()}",
    }
    _serve(step, info)


class Worker:
    """A worker process of this module, driven over its stdin/stdout."""

    def __init__(self, framework: str, args: argparse.Namespace, *, env: dict | None = None, extra=()):
        cmd = [sys.executable, "-m", "benchmarks.p3_train_throughput", "--worker", framework]
        cmd += ["--batch", str(args.batch), *extra]
        if args.dropout is not None:
            cmd += ["--dropout", str(args.dropout)]
        self.framework = framework
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
            env={**os.environ, **(env or {})},
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        self.info = self._expect("ready")
        self.times: list[float] = []

    def _expect(self, kind: str):
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                _, got, payload = line.rstrip("\n").split(" ", 2)
                if got == kind:
                    return json.loads(payload)
        self.log.seek(0)
        raise RuntimeError(f"{self.framework} worker exited; its log:\n{self.log.read()[-4000:]}")

    def step(self) -> float:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        self.times.append(self._expect("time"))
        return self.times[-1]

    def close(self) -> dict:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.info.update(self._expect("memory"))
        self.proc.wait(timeout=60)
        return self.info


def images_per_s(w: Worker, batch: int) -> float:
    return batch / statistics.median(w.times)


# --- attempts: what was tried on the gl_jax side -----------------------------------------------------
# (name, environment of the gl_jax worker, extra worker arguments). Every flag here was checked to exist in
# this jaxlib (an unknown XLA flag aborts the process). Rows without a YNNPACK option run on gl_jax's
# default, YNNPACK convolutions off (gl_jax/xla_flags.py); "XLA's default" turns that off.
_YNN = "--xla_cpu_experimental_ynn_fusion_type="
ATTEMPTS: list[tuple[str, dict[str, str], list[str]]] = [
    ("gl_jax default (YNNPACK convolutions off, dots on)", {}, []),
    ("XLA's default (YNNPACK convolutions and dots)", {"GL_JAX_XLA_DEFAULTS": "0"}, []),
    (
        "YNNPACK off: Eigen convolutions and dots",
        {
            "XLA_FLAGS": _YNN + "-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,"
            "-LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
        },
        [],
    ),
    (
        "YNNPACK also fuses elementwise + reduce",
        {"XLA_FLAGS": _YNN + "+LIBRARY_FUSION_TYPE_ELTWISE,+LIBRARY_FUSION_TYPE_REDUCE"},
        [],
    ),
    ("fast math", {"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"}, []),
    ("vector width 512", {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=512"}, []),
    ("opt preset FAST_RUNTIME", {"XLA_FLAGS": "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME"}, []),
    ("gl_jax on 1 core", {}, ["--cpus", "1"]),
    ("matmul precision bfloat16", {}, ["--matmul-precision", "bfloat16"]),
    ("bf16 compute, fp32 master weights", {}, ["--compute-dtype", "bfloat16"]),
    ("remat 'dots'", {}, ["--remat", "dots"]),
    ("remat 'full'", {}, ["--remat", "full"]),
]


def interleave(workers: list[Worker], repeats: int) -> None:
    """Steps every worker once per round, in the harness's alternating order (each worker warmed up already:
    its set-up ran one step); each step's time is the one its worker measured around the step alone."""
    _timing.interleave({str(i): w.step for i, w in enumerate(workers)}, repeats=repeats, warmup=0)


def run_main(args: argparse.Namespace) -> None:
    machine = _timing.Machine()
    ours = Worker("jax", args, extra=_jax_args(args))
    peers = [Worker("torch", args, extra=_torch_args(args, n)) for n in args.torch_threads]
    for w in (ours, *peers):
        if w.info["params"] != DDPM_CIFAR10_PARAMS:
            raise AssertionError(f"{w.framework} network has {w.info['params']:,} parameters.")
    interleave([ours, *peers], args.repeats)
    machine.stop()
    for w in (ours, *peers):
        w.close()
    print(
        f"DDPM CIFAR-10 U-Net ({DDPM_CIFAR10_PARAMS:,} parameters), batch {args.batch}, float32, "
        f"{args.repeats} interleaved steps each after a warm-up (median, range min-max); {machine.line()}.\n"
    )
    rows = []
    named = [(ours, "gl_jax (jit, XLA:CPU)")] + [(w, "diffusers UNet2DModel + PyTorch") for w in peers]
    for w, name in named:
        i = w.info
        rows.append(
            (
                name,
                i["threads"],
                f"{statistics.median(w.times):.2f}",
                f"{min(w.times):.2f}-{max(w.times):.2f}",
                f"{images_per_s(w, args.batch):.3f}",
                f"{images_per_s(ours, args.batch) / images_per_s(w, args.batch):.2f}x"
                if w is not ours
                else "-",
                f"{i['build_s']:.1f} + {i['compile_s']:.1f}",
                f"{i['rss_base_mib']:.0f}",
                f"{i['rss_setup_peak_mib']:.0f}",
                f"{i['rss_steps_peak_mib']:.0f}" + ("" if i["peak_reset"] else " (whole run)"),
                f"{i['rss_steps_peak_mib'] - i['rss_base_mib']:.0f}",
                f"{i['xla_plan_mib']:.0f}" if "xla_plan_mib" in i else "-",
            )
        )
    header = (
        "implementation",
        "threads",
        "step (s)",
        "range (s)",
        "images/s",
        "gl_jax / this (goal >= 1.0x)",
        "build + compile (s)",
        "RSS base (MiB)",
        "peak RSS, set-up (MiB)",
        "peak RSS, steps (MiB)",
        "step memory (MiB)",
        "XLA plan (MiB)",
    )
    print(_timing.table(header, rows))
    equal = [w for w, n in zip(peers, args.torch_threads, strict=True) if n == 0]
    if equal:
        ratio = _timing.ratio_cell(_timing.Timing(tuple(ours.times)), _timing.Timing(tuple(equal[0].times)))
        print(
            f"\nheadline, on the same cores (PyTorch at its default, {equal[0].info['threads']}): {ratio} "
            "(goal >= 1.0x)"
        )
    else:
        print("\nno headline: no PyTorch worker at its default threading (--torch-threads 0) ran")
    flops = ours.info.get("gflop_per_step", 0.0)
    if flops:
        print(
            f"XLA's cost analysis: {flops:.0f} GFLOP per step, {flops / statistics.median(ours.times):.1f} "
            "GFLOP/s achieved by gl_jax at this load."
        )
    print(
        "ratio = gl_jax images/s / PyTorch images/s. step memory = peak RSS during the timed steps - RSS "
        "after imports. XLA plan = the compiled step's arguments + outputs - donated aliases + temporaries."
    )


def run_attempts(args: argparse.Namespace) -> None:
    machine = _timing.Machine()
    peer = Worker("torch", args, extra=_torch_args(args, args.torch_threads[0]))
    rows = []
    for name, env, extra in ATTEMPTS:
        if args.only and not any(s in name for s in args.only):
            continue
        setting = " ".join(f"`{key}={value}`" for key, value in env.items()) or " ".join(extra) or "-"
        try:
            ours = Worker("jax", args, env=env, extra=[*_jax_args(args), *extra])
        except RuntimeError as e:
            rows.append((name, setting, "failed", "-", "-", "-", str(e).splitlines()[-1][:80]))
            continue
        peer.times = []
        interleave([ours, peer], args.repeats)
        ours.close()
        ratio = images_per_s(ours, args.batch) / images_per_s(peer, args.batch)
        rows.append(
            (
                name,
                setting,
                f"{statistics.median(ours.times):.2f}",
                f"{statistics.median(peer.times):.2f}",
                f"{ratio:.2f}x",
                f"{ours.info['compile_s']:.0f}",
                f"{_load(os.getloadavg())}",
            )
        )
        print(" | ".join(rows[-1]), flush=True)
    peer.close()
    print(
        f"\nAttempts, batch {args.batch}, {args.repeats} interleaved steps each against one PyTorch worker "
        f"({peer.info['threads']}); {machine.line()}.\n"
    )
    header = (
        "attempt",
        "setting",
        "gl_jax step (s)",
        "PyTorch step (s)",
        "ratio",
        "compile (s)",
        "load after",
    )
    print(_timing.table(header, rows))


def _load(avg) -> str:
    return "/".join(f"{v:.1f}" for v in avg)


def _jax_args(args) -> list[str]:
    out = ["--compute-dtype", args.compute_dtype, "--remat", args.remat, "--cpus", str(args.cpus)]
    if args.matmul_precision:
        out += ["--matmul-precision", args.matmul_precision]
    if args.profile:
        out += ["--profile", args.profile]
    return out


def _torch_args(args, threads: int) -> list[str]:
    out = ["--torch-threads", str(threads)]
    return out + (["--torch-channels-last"] if args.torch_channels_last else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="Timed steps per framework (median).")
    parser.add_argument("--attempts", action="store_true", help="Run the gl_jax settings in ATTEMPTS.")
    parser.add_argument(
        "--only", nargs="*", help="With --attempts: only attempts whose name has one of these."
    )
    parser.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--remat", default="none", choices=("none", "full", "dots"))
    parser.add_argument("--matmul-precision", default="")
    parser.add_argument("--dropout", type=float, default=None, help="Override the networks' dropout (0.1).")
    parser.add_argument(
        "--torch-threads",
        type=int,
        nargs="+",
        default=[0],
        help="PyTorch intra-op threads, one PyTorch worker each (0, the headline: its default, one per core, "
        "the cores gl_jax's XLA uses).",
    )
    parser.add_argument("--cpus", type=int, default=0, help="gl_jax worker: run on this many cores (0: all).")
    parser.add_argument("--torch-channels-last", action="store_true", help="PyTorch in channels_last.")
    parser.add_argument("--profile", default="", help="Write a jax.profiler trace of one step here.")
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "jax":
        _jax_worker(args)
    elif args.worker == "torch":
        _torch_worker(args)
    elif args.attempts:
        run_attempts(args)
    else:
        run_main(args)


if __name__ == "__main__":
    main()
