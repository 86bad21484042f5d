"""P6: training and sampling speed on one accelerator: step time, images/s, FLOPs, MFU and memory.

What runs. Two networks, each trained by gl_jax's one compiled train step, in float32 and in bfloat16
compute (`config.train.compute_dtype`: fp32 master weights, loss and gradients, bf16 matmuls and
convolutions, `gl_jax.train.precision`):
  * "DDPM++ CIFAR-10": score_sde's `vp/ddpmpp` config as shipped, `get_config("cifar10_vp_ddpmpp")`:
    the 61.8M-parameter DDPM++ U-Net (`ddpmpp-cifar10`), DDPM's 1,000 linear betas, eps prediction,
    summed loss, dropout 0.1 with per-example keys, Adam lr 2e-4 with warm-up and clipping at 1, EMA
    0.9999, the non-finite guard; data 32x32x3;
  * "DiT-B/2 latents": `DiT.from_variant("DiT-B/2")` (12 blocks, width 768, 12 heads, 2x2 patches: 256
    tokens) on 32x32x4 latents (the VAE latents of 256x256 images, Peebles & Xie 2023), class-conditional
    over 1,000 labels with label dropout 0.1, DDPM's 1,000 linear betas fed as 999 t, eps prediction,
    AdamW lr 1e-4 without weight decay or clipping, EMA 0.9999 (the paper's settings; its learned
    variance is left out: gl_jax's diffusion family predicts eps only, which changes one output layer).
Sampling: the DDPM++ network (random weights; the arithmetic does not depend on them) drawing a batch with
EDM's Heun sampler at 18 levels (35 network evaluations, `edm_sampler(steps=18)`) and DPM-Solver++(2M) at
10 steps (10 evaluations, `dpm_solver_pp(steps=10, order=2, multistep=True)`), each the whole sampling loop
in one `jax.jit` of `ScoreDiffusion.sample_counted`. In float32 by default; `--sample-dtypes float32
bfloat16` adds bf16 rows (the network's layers in bf16, the solver's state in fp32), one more compile each.

Data: random batches in [-1, 1] (and random labels) of each network's shape, fed straight to the compiled
step; no input pipeline is timed. `--batch` is per device (128 by default, score_sde's batch; DiT trained
at 256): the global batch is `batch x devices`, sharded on its leading axis over `parallel.make_mesh()`
(data parallelism, state replicated), so the FLOPs, images/s and memory below are per device. Sampling runs
on one device. A row that does not fit the device's memory is reported as failed; pass a smaller `--batch`
(XLA:CPU plans about 0.33 GiB per example for the DDPM++ step in fp32, P5).

Method. Every row is a fresh worker process started by this script (so compile times share no trace or
jit cache, the allocator's peak is the row's own, and a row that fails is reported, not fatal); the parent
starts no JAX backend of its own. In the worker:
  * compile s: `lower(...).compile()` of the step (tracing, lowering, XLA's optimisation and, on GPU, its
    autotuning), timed once; JAX's persistent compilation cache is switched off;
  * step s: the median over `--steps` timed steps, each `jax.block_until_ready`, after `--warmup` steps;
    images/s per device = per-device batch / step s;
  * GFLOP/step: `compiled.cost_analysis()["flops"]` of the compiled per-device step: every convolution
    and matmul of the forward and backward pass, plus the elementwise work (normalisations, activations,
    casts, Adam, the EMA, the guard) that the usual model-FLOPs count leaves out. For the full networks
    XLA counts (lowered step, before optimisation) 61.1 GFLOP per example for DDPM++ and 138.9 for DiT-B/2,
    which is 6x the paper's 23.0 GFLOPs of one forward pass (DiT counts a multiply-add once; training is
    about 3 passes) plus 0.6 %; bf16 changes these by under 0.1 %. Achieved TFLOP/s = FLOPs / step s;
    MFU = achieved / the device's dense peak in `PEAK_FLOPS` for the row's dtype. fp32 rows are held
    against the units JAX's default matmul precision uses for fp32: TF32 tensor cores on A100/H100/H200/L4,
    FP32 cores on V100, one bf16 MXU pass on TPU (so the bf16 peak). A device kind not in the table (any
    CPU) gets MFU "n/a";
  * memory: XLA's plan of the compiled executable, `memory_analysis()`: arguments + outputs - donated
    aliases + temporaries (the state is donated, so counted once), and, where the backend reports it
    (GPU, TPU), the allocator's `memory_stats()["peak_bytes_in_use"]` of the worker's device after the
    timed calls, which adds what XLA's plan does not see (the input batch's buffers, fragmentation);
  * sampling: compile s as above; call s = the median over `--repeats` calls after one warm-up call;
    images/s = sample batch / call s; NFE as the sampler reports it.

Goal: one command, under 4 minutes on one H100/H200, printing the tables (and `--json PATH` writes every
number with the device, the peak figure used and its source); MFU of the bf16 training rows is the number
to improve. `--smoke` runs the same code with the networks shrunk (DDPM++ at 8 channels, 2 resolutions, 1
block per resolution; DiT one block of width 64), batch 2, 2 timed steps, and on CPU compiled without
XLA's backend optimisation; its times check the code path and measure nothing. CI runs it
(`tests/test_p6_accelerator.py`). Where JAX sees only a CPU, a run without `--smoke` (or `--on-cpu`) says
so and measures nothing, so `make bench` passes over it on a machine without an accelerator.

Recorded run: none on an accelerator yet. The smoke run on this project's 2-core CPU machine (2026-12-01,
load average 2.4-4.9 from other jobs): 6 rows in 58-66 s (52 s of CPU time), compile 3-12 s per row;
XLA's FLOPs per step of the bf16 rows 1.7 % (DDPM++) and 5.4 % (DiT) above the fp32 rows' at these tiny
widths, where the casts are a visible share of the work; MFU "n/a" (no peak for a CPU).

Run:
  .venv/bin/python -m benchmarks.p6_accelerator                     # the full tables, on a GPU or TPU
  .venv/bin/python -m benchmarks.p6_accelerator --json p6.json [--batch 128] [--sample-batch 256]
  .venv/bin/python -m benchmarks.p6_accelerator --sample-dtypes float32 bfloat16   # bf16 sampling too
  .venv/bin/python -m benchmarks.p6_accelerator --models dit --dtypes bfloat16 --samplers   # one row
  JAX_PLATFORMS=cpu .venv/bin/python -m benchmarks.p6_accelerator --smoke   # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any, NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL_S = 240.0  # The whole run on one H100/H200.
DTYPES = ("float32", "bfloat16")


# --- peak FLOP/s per device ----------------------------------------------------------------------------


class Peak(NamedTuple):
    """Dense (no structured sparsity) peak FLOP/s of one device (one GPU, one TPU chip).

    Attributes:
      name: the device, as its datasheet names it.
      bfloat16: peak of bf16 matmuls with fp32 accumulation.
      float32: peak of fp32 matmuls at JAX's default precision, on the units named by `float32_units`.
      float32_units: "TF32 tensor cores", "FP32 cores" or "bf16 MXU pass".
      source: the document the figures come from.
    """

    name: str
    bfloat16: float
    float32: float
    float32_units: str
    source: str


# Where each figure comes from. NVIDIA's datasheets give tensor-core figures "with sparsity", twice the
# dense rate; the dense figures (half) are the ones in the table.
_NV = "nvidia.com/en-us/data-center/"
_H100 = f"NVIDIA H100 datasheet ({_NV}h100): SXM BF16 1,979 / TF32 989 TFLOPS with sparsity"
_H100_PCIE = f"NVIDIA H100 datasheet ({_NV}h100): PCIe BF16 1,513 / TF32 756 TFLOPS with sparsity"
_H100_NVL = f"NVIDIA H100 datasheet ({_NV}h100): NVL BF16 1,671 / TF32 835 TFLOPS with sparsity"
_H200 = f"NVIDIA H200 datasheet ({_NV}h200): SXM BF16 1,979 / TF32 989 TFLOPS with sparsity"
_H200_NVL = f"NVIDIA H200 datasheet ({_NV}h200): NVL BF16 1,671 / TF32 835 TFLOPS with sparsity"
_A100 = f"NVIDIA A100 datasheet ({_NV}a100): BF16 312 / TF32 156 TFLOPS dense (SXM4 and PCIe)"
_V100 = f"NVIDIA V100 datasheet ({_NV}v100): FP32 15.7 (SXM2), 14 (PCIe), 16.4 (V100S) TFLOPS"
_L4 = f"NVIDIA L4 datasheet ({_NV}l4): BF16 242 / TF32 120 TFLOPS with sparsity"
_TPU_V4 = "Google Cloud TPU v4 documentation (cloud.google.com/tpu/docs/v4): 275 TFLOPS bf16 per chip"
_TPU_V5E = "Google Cloud TPU v5e documentation (cloud.google.com/tpu/docs/v5e): 197 TFLOPS bf16 per chip"
_TPU_V5P = "Google Cloud TPU v5p documentation (cloud.google.com/tpu/docs/v5p): 459 TFLOPS bf16 per chip"
# The units JAX's default precision multiplies fp32 matrices on (docs.jax.dev, "Matmul precision"): TF32 on
# NVIDIA tensor cores since Ampere, plain FP32 on Volta (which has no bf16 units either: XLA computes bf16
# in fp32 there, so both rows meet the FP32 peak), one bf16 pass on the TPU's MXU (the bf16 peak).
_TF32, _FP32, _MXU = "TF32 tensor cores", "FP32 cores", "bf16 MXU pass"
_T = 1e12

# (a regular expression searched in `jax.Device.device_kind`, the peak); the first match wins, so each
# form factor comes before its family's default.
# fmt: off
PEAK_FLOPS: tuple[tuple[str, Peak], ...] = (
    (r"\bH100\b.*\bNVL\b", Peak("H100 NVL", 835.5 * _T, 417.5 * _T, _TF32, _H100_NVL)),
    (r"\bH100\b.*\bPCIe\b", Peak("H100 PCIe", 756.5 * _T, 378.0 * _T, _TF32, _H100_PCIE)),
    (r"\bH100\b", Peak("H100 SXM", 989.5 * _T, 494.5 * _T, _TF32, _H100)),  # "NVIDIA H100 80GB HBM3"
    (r"\bH200\b.*\bNVL\b", Peak("H200 NVL", 835.5 * _T, 417.5 * _T, _TF32, _H200_NVL)),
    (r"\bH200\b", Peak("H200 SXM", 989.5 * _T, 494.5 * _T, _TF32, _H200)),  # "NVIDIA H200"
    (r"\bA100\b", Peak("A100", 312.0 * _T, 156.0 * _T, _TF32, _A100)),  # "NVIDIA A100-SXM4-80GB"
    (r"\bV100S\b", Peak("V100S PCIe", 16.4 * _T, 16.4 * _T, _FP32, _V100)),
    (r"\bV100\b.*\bPCIE\b", Peak("V100 PCIe", 14.0 * _T, 14.0 * _T, _FP32, _V100)),
    (r"\bV100\b", Peak("V100 SXM2", 15.7 * _T, 15.7 * _T, _FP32, _V100)),  # "Tesla V100-SXM2-16GB"
    (r"\bL4\b", Peak("L4", 121.0 * _T, 60.0 * _T, _TF32, _L4)),  # "NVIDIA L4" (not L40, L40S)
    (r"^TPU v4$", Peak("TPU v4", 275.0 * _T, 275.0 * _T, _MXU, _TPU_V4)),
    (r"^TPU v5( lite|e)$", Peak("TPU v5e", 197.0 * _T, 197.0 * _T, _MXU, _TPU_V5E)),
    (r"^TPU v5p?$", Peak("TPU v5p", 459.0 * _T, 459.0 * _T, _MXU, _TPU_V5P)),
)
# fmt: on


def peak_for(device_kind: str) -> Peak | None:
    """The peak of a `jax.Device.device_kind` (e.g. "NVIDIA H100 80GB HBM3", "TPU v5 lite"), or None."""
    for pattern, peak in PEAK_FLOPS:
        if re.search(pattern, device_kind, flags=re.IGNORECASE):
            return peak
    return None


# --- the two networks ------------------------------------------------------------------------------------


def ddpmpp_cifar10(*, smoke: bool):
    """score_sde's `vp/ddpmpp` config and a CIFAR-10-shaped `DataSpec`; smoke: 8 channels, 2 levels."""
    from gl_jax.experiments import get_config
    from gl_jax.spec import DataSpec

    config = get_config("cifar10_vp_ddpmpp")
    if smoke:  # The same blocks (BigGAN residual blocks, attention at 16x16), far fewer of them.
        config.model.update(dict(channels=8, channel_mults=(1, 2), num_res_blocks=1))
    return config, DataSpec("cifar10-shaped noise", "image", (32, 32, 3), 256, None, {})


def dit_b2_latents(*, smoke: bool):
    """DiT-B/2 on 32x32x4 latents, class-conditional over 1,000 labels (Peebles & Xie 2023, sec. 5)."""
    import ml_collections

    from gl_jax.configs import base_config
    from gl_jax.spec import DataSpec

    config = base_config()
    config.model = ml_collections.ConfigDict(dict(name="dit", variant="DiT-B/2", num_classes=1000))
    config.sde = ml_collections.ConfigDict(dict(name="ddpm", schedule="linear", num_steps=1000))
    config.loss.update(dict(noise_cond="999t", prediction="eps", time_sampling="discrete", reduce="mean"))
    config.optim.update(dict(optimizer="adamw", lr=1e-4, weight_decay=0.0, grad_clip=0.0))
    config.train.ema_decay = 0.9999
    config.data.batch_size = 256
    if smoke:  # Every part of a DiT block, one block of width 64.
        config.model.update(dict(depth=1, hidden_size=64, num_heads=2, frequency_embedding_size=16))
    return config, DataSpec("latent-shaped noise", "vector", (32, 32, 4), None, 1000, {})


# name -> (config builder, what the table calls it).
MODELS = {
    "ddpmpp": (ddpmpp_cifar10, "DDPM++ CIFAR-10 (vp/ddpmpp)"),
    "dit": (dit_b2_latents, "DiT-B/2, 32x32x4 latents"),
}
# name -> (`gl_jax.samplers.SAMPLERS` name, steps, options, what the table calls it). Both on DDPM++.
SAMPLERS = {
    "edm_heun_35": ("edm", 18, {}, "EDM Heun, 18 levels"),
    "dpm_solver_pp_2m_10": (
        "dpm_solver_pp",
        10,
        {"order": 2, "multistep": True},
        "DPM-Solver++(2M), 10 steps",
    ),
}


# --- what XLA and the allocator report ---------------------------------------------------------------


def xla_flops(compiled) -> float | None:
    """FLOPs of a compiled executable from XLA's cost analysis, None where the backend gives none.

    `cost_analysis()` returns a dict, a list with one dict per module (older JAX), or None; the "flops"
    key is missing for some backends and programs.
    """
    try:
        cost = compiled.cost_analysis()
    except Exception:  # Backends without a cost model raise (e.g. NotImplementedError, XlaRuntimeError).
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or cost.get("flops") is None:
        return None
    flops = float(cost["flops"])
    return flops if flops > 0 else None


def xla_plan_bytes(compiled) -> int | None:
    """Device bytes XLA plans for one call: arguments + outputs - donated aliases + temporaries."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # Not every backend implements it.
        return None
    if m is None:
        return None
    return int(
        m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    )


def allocator_peak_bytes(device) -> int | None:
    """The device allocator's high-water mark in this process (GPU, TPU); None where not reported (CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # Some backends raise instead of returning None.
        return None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def synthetic_batch(spec, batch: int, *, seed: int = 0) -> dict:
    """Random data of `spec`'s shape: x `[B, *shape]` uniform in [-1, 1], and labels `[B]` when it has any."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {"x": rng.uniform(-1.0, 1.0, (batch, *spec.shape)).astype(np.float32)}
    if spec.num_classes:
        out["label"] = rng.integers(0, spec.num_classes, (batch,)).astype(np.int32)
    return out


def _median_time(fn, *, warmup: int, repeats: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


# --- one row (runs in a worker process) ----------------------------------------------------------------


def _compiler_options(mesh, *, smoke: bool) -> dict | None:
    """XLA's defaults, except in smoke runs on CPU: no backend (LLVM) optimisation, as the library compiles
    its one-off initialisation (`parallel.init_compiler_options`), which halves XLA:CPU's compile time; the
    smoke run's times are a check of the code path, not a measurement."""
    from gl_jax.train import parallel

    return parallel.init_compiler_options(mesh) if smoke else None


def train_row(model: str, dtype: str, *, batch: int, steps: int, warmup: int, smoke: bool) -> dict:
    """Compiles and times the train step of `MODELS[model]` in `dtype` at `batch` examples per device."""
    import functools

    import jax
    import numpy as np

    from gl_jax.families import build_family
    from gl_jax.train import TrainState, make_optimizer, make_train_step, parallel
    from gl_jax.train.precision import COMPUTE_DTYPES

    config, spec = MODELS[model][0](smoke=smoke)
    family = build_family(config, spec)
    optim = {k: v for k, v in config.optim.items() if k != "grad_accum_steps"}
    tx = family.optimizer(functools.partial(make_optimizer, **optim, total_steps=config.train.num_steps))
    mesh = parallel.make_mesh()
    devices = int(mesh.devices.size)
    state = parallel.init_replicated(
        lambda k: TrainState.create(params=family.init(k), tx=tx), jax.random.key(0), mesh
    )
    params = sum(int(x.size) for x in jax.tree.leaves(state.params))
    train_step = make_train_step(
        family.loss, ema_decay=config.train.ema_decay, compute_dtype=COMPUTE_DTYPES[dtype]
    )
    step_fn = parallel.compile_train_step(train_step, mesh)
    data = parallel.shard_batch(synthetic_batch(spec, batch * devices), mesh)  # x: [B devices, H, W, C]
    key = jax.random.key(1)

    start = time.perf_counter()
    compiled = step_fn.lower(state, data, key).compile(compiler_options=_compiler_options(mesh, smoke=smoke))
    compile_s = time.perf_counter() - start
    box = {"state": state}
    del state  # Donated to the first call.

    def step():
        box["state"], box["metrics"] = compiled(box["state"], data, key)
        jax.block_until_ready(box)

    step_s, times = _median_time(step, warmup=warmup, repeats=steps)
    metrics = jax.device_get(box["metrics"])  # The last step's: the guard's flag and the loss.
    flops = xla_flops(compiled)
    return {
        "model": model,
        "dtype": dtype,
        "params": params,
        "devices": devices,
        "batch_per_device": batch,
        "compile_s": compile_s,
        "step_s": step_s,
        "step_times_s": times,
        "images_per_s_per_device": batch / step_s,
        "flops_per_step": flops,
        "achieved_flops_per_s": flops / step_s if flops else None,
        "xla_plan_bytes": xla_plan_bytes(compiled),
        "allocator_peak_bytes": allocator_peak_bytes(jax.local_devices()[0]),
        "finite": bool(metrics["finite"] == 1.0 and np.isfinite(metrics["loss"])),
    }


def sample_row(sampler: str, dtype: str, *, batch: int, repeats: int, smoke: bool) -> dict:
    """Compiles and times one sampling call of `batch` images with `SAMPLERS[sampler]` on DDPM++."""
    import jax
    import numpy as np

    from gl_jax.families import build_family
    from gl_jax.families.build import bind_sampler
    from gl_jax.train import parallel
    from gl_jax.train.precision import COMPUTE_DTYPES, with_compute_dtype

    name, steps, options, _ = SAMPLERS[sampler]
    config, spec = ddpmpp_cifar10(smoke=smoke)
    family = build_family(config, spec)
    family = family.with_sampler(
        bind_sampler(name, steps=steps, options=options, where=sampler), threshold="none"
    )
    device = jax.local_devices()[0]
    mesh = parallel.make_mesh([device])
    params = parallel.init_replicated(family.init, jax.random.key(0), mesh)

    def draw(params, batch_unused, key):
        # Shaped as a loss for `with_compute_dtype`: in bf16 it casts the parameters and every flax layer's
        # inputs to bf16; the noise, the times and so the solver's state stay fp32.
        del batch_unused
        result = family.sample_counted(params, key, batch)  # x: [B, 32, 32, 3]
        return result.x, {"nfe": result.nfe}

    fn = jax.jit(with_compute_dtype(draw, COMPUTE_DTYPES[dtype]))
    key = jax.random.key(2)
    start = time.perf_counter()
    compiled = fn.lower(params, None, key).compile(compiler_options=_compiler_options(mesh, smoke=smoke))
    compile_s = time.perf_counter() - start
    box = {}

    def call():
        box["out"] = jax.block_until_ready(compiled(params, None, key))

    call_s, times = _median_time(call, warmup=1, repeats=repeats)
    x, aux = box["out"]
    return {
        "sampler": sampler,
        "dtype": dtype,
        "nfe": int(aux["nfe"]),
        "batch": batch,
        "compile_s": compile_s,
        "call_s": call_s,
        "call_times_s": times,
        "images_per_s_per_device": batch / call_s,
        "xla_plan_bytes": xla_plan_bytes(compiled),
        "allocator_peak_bytes": allocator_peak_bytes(device),
        "finite": bool(np.isfinite(np.asarray(x)).all()),
    }


def _worker(job: dict) -> None:
    import jax

    jax.config.update("jax_enable_compilation_cache", False)  # Compile times are XLA's, not a cache's.
    kind = job.pop("kind")
    row = train_row(**job) if kind == "train" else sample_row(**job)
    print("@@", json.dumps({**row, "device": device_info()}), flush=True)


# --- the parent -------------------------------------------------------------------------------------------


def run_job(job: dict, *, timeout: float) -> dict:
    """Runs one row in a fresh worker process; a failed row comes back as {"error": its last line}."""
    cmd = [sys.executable, "-m", "benchmarks.p6_accelerator", "--worker", json.dumps(job)]
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**job, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("@@ ")]
    if out.returncode or not lines:
        last = [line for line in out.stderr.splitlines() if line.strip()][-1:] or [f"exit {out.returncode}"]
        return {**job, "error": last[0][-300:]}
    return {**json.loads(lines[-1][3:]), "worker_s": time.perf_counter() - start}


def default_backend(*, timeout: float) -> str:
    """JAX's default backend ("gpu", "tpu", "cpu"), asked of a short-lived process (see `main`)."""
    cmd = [sys.executable, "-c", "import jax; print(jax.default_backend())"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = out.stdout.split()
    return lines[-1] if out.returncode == 0 and lines else "unknown"


def _progress(what: str, row: dict) -> None:
    done = f"failed: {row['error']}" if "error" in row else f"{row['worker_s']:.1f} s"
    print(f"p6: {what}: {done}", file=sys.stderr, flush=True)


def device_info() -> dict:
    """The first device's kind and platform, the device count, JAX's version, the peak used."""
    import jax

    device = jax.devices()[0]
    peak = peak_for(device.device_kind)
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "devices": jax.device_count(),
        "jax_version": jax.__version__,
        "default_matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
        "peak": peak._asdict() if peak else None,
    }


def add_mfu(rows: list[dict], peak: dict | None) -> None:
    """Adds `peak_flops_per_s` and `mfu` (None: no peak for the device, or no FLOPs from XLA)."""
    for row in rows:
        if "error" in row:
            continue
        peak_flops = peak[row["dtype"]] if peak else None
        row["peak_flops_per_s"] = peak_flops
        achieved = row.get("achieved_flops_per_s")
        row["mfu"] = achieved / peak_flops if peak_flops and achieved else None


def _gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f}"


def _num(x: float | None, fmt: str, scale: float = 1.0) -> str:
    return "n/a" if x is None else format(x / scale, fmt)


def print_tables(report: dict) -> None:
    """The device and its peak, then the training and the sampling rows as Markdown tables."""
    info = report["device"] or {"devices": "?", "device_kind": "unknown device", "platform": "no row ran"}
    peak = info.get("peak")
    print(
        f"{info['devices']} x {info['device_kind']} ({info['platform']}), JAX {info.get('jax_version')}, "
        f"matmul precision {info.get('default_matmul_precision')}"
        f"{', smoke sizes' if report['smoke'] else ''}."
    )
    if peak:
        print(
            f"Peak per device ({peak['name']}): bf16 {peak['bfloat16'] / 1e12:.1f} TFLOP/s, fp32 "
            f"{peak['float32'] / 1e12:.1f} TFLOP/s ({peak['float32_units']}); source: {peak['source']}."
        )
    else:
        print(f"No peak FLOP/s in PEAK_FLOPS for {info['device_kind']!r}: MFU n/a.")
    print("\nTraining (one compiled train step; per device):\n")
    print(
        "| model | dtype | params | batch | compile s | step s | images/s | GFLOP/step | TFLOP/s | MFU "
        "| XLA plan GiB | allocator peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["train"]:
        name = MODELS[r["model"]][1]
        if "error" in r:
            print(f"| {name} | {r['dtype']} | failed: {r['error']} |")
            continue
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
        print(
            f"| {name} | {r['dtype']} | {r['params']:,} | {r['batch_per_device']} | "
            f"{r['compile_s']:.1f} | {r['step_s']:.4f} | {r['images_per_s_per_device']:.1f} | "
            f"{_num(r['flops_per_step'], '.4g', 1e9)} | {_num(r['achieved_flops_per_s'], '.3g', 1e12)} | "
            f"{mfu} | {_gib(r['xla_plan_bytes'])} | {_gib(r['allocator_peak_bytes'])} |"
        )
    print("\nSampling (DDPM++ network, one jitted call per batch, one device):\n")
    print(
        "| sampler | NFE | dtype | batch | compile s | call s | images/s | XLA plan GiB "
        "| allocator peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in report["sample"]:
        name = SAMPLERS[r["sampler"]][3] if r["sampler"] in SAMPLERS else r["sampler"]
        if "error" in r:
            print(f"| {name} | | {r['dtype']} | failed: {r['error']} |")
            continue
        print(
            f"| {name} | {r['nfe']} | {r['dtype']} | {r['batch']} | {r['compile_s']:.1f} | "
            f"{r['call_s']:.3f} | {r['images_per_s_per_device']:.1f} | {_gib(r['xla_plan_bytes'])} | "
            f"{_gib(r['allocator_peak_bytes'])} |"
        )
    total = report["total_s"]
    goal = f"goal < {GOAL_S:.0f} s on one H100/H200: {'met' if total < GOAL_S else 'missed'}"
    print(f"\nWhole run: {total:.0f} s ({'smoke sizes' if report['smoke'] else goal}).")


# The sizes of a full run and of `--smoke`, where a flag leaves them out.
SIZES = {
    "full": dict(batch=128, sample_batch=256, steps=20, warmup=2, repeats=3),
    "smoke": dict(batch=2, sample_batch=2, steps=2, warmup=1, repeats=2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="Tiny networks and batches (CI, on CPU).")
    parser.add_argument("--batch", type=int, help="Training batch per device (128; smoke 2).")
    parser.add_argument("--sample-batch", type=int, help="Images per sampling call (256; smoke 2).")
    parser.add_argument("--steps", type=int, help="Timed train steps per row (20; smoke 2).")
    parser.add_argument("--warmup", type=int, help="Untimed train steps after compiling (2; smoke 1).")
    parser.add_argument("--repeats", type=int, help="Timed sampling calls per row (3; smoke 2).")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--dtypes", nargs="*", default=list(DTYPES), choices=list(DTYPES), help="Training.")
    parser.add_argument("--sample-dtypes", nargs="*", default=["float32"], choices=list(DTYPES))
    parser.add_argument("--samplers", nargs="*", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds allowed per row's process.")
    parser.add_argument("--json", default="", help="Also write the report as JSON here.")
    parser.add_argument("--on-cpu", action="store_true", help="Full sizes even with only a CPU (hours).")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return

    start = time.perf_counter()
    # The parent never starts a JAX backend: on a GPU it would reserve most of the memory the workers need.
    if not (args.smoke or args.on_cpu) and default_backend(timeout=args.timeout) == "cpu":
        print(
            "P6 measures an accelerator and JAX sees only a CPU here: run it on a GPU or TPU, or pass "
            "--smoke (the same code at tiny sizes) or --on-cpu (full sizes, hours). Nothing measured."
        )
        return
    sizes = SIZES["smoke" if args.smoke else "full"]
    size = {k: sizes[k] if getattr(args, k) is None else getattr(args, k) for k in sizes}
    report: dict[str, Any] = {"smoke": args.smoke, "sizes": size, "train": [], "sample": []}
    report["peak_table"] = [{"pattern": p, **peak._asdict()} for p, peak in PEAK_FLOPS]
    for model in args.models:
        for dtype in args.dtypes:
            job = dict(kind="train", model=model, dtype=dtype, smoke=args.smoke)
            job.update(batch=size["batch"], steps=size["steps"], warmup=size["warmup"])
            report["train"].append(run_job(job, timeout=args.timeout))
            _progress(f"train {model} {dtype}", report["train"][-1])
    for sampler in args.samplers:
        for dtype in args.sample_dtypes:
            job = dict(kind="sample", sampler=sampler, dtype=dtype, smoke=args.smoke)
            job.update(batch=size["sample_batch"], repeats=size["repeats"])
            report["sample"].append(run_job(job, timeout=args.timeout))
            _progress(f"sample {sampler} {dtype}", report["sample"][-1])
    rows = report["train"] + report["sample"]
    for row in rows:
        row.pop("kind", None)
    devices = [row.pop("device") for row in rows if "device" in row]
    report["device"] = devices[0] if devices else None
    add_mfu(report["train"], report["device"]["peak"] if devices else None)
    report["total_s"] = time.perf_counter() - start
    print_tables(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    failed = [r for r in report["train"] + report["sample"] if "error" in r]
    if failed:
        sys.exit(f"{len(failed)} row(s) failed.")


if __name__ == "__main__":
    main()
