"""DDPM++ (small) on Fashion-MNIST, sized so a CPU user trains it in about an hour (2 cores).

Launch:
  gl-jax --config experiments/fashion_mnist_ddpmpp.py --workdir runs/fashion_mnist_ddpmpp
  gl-jax --config experiments/fashion_mnist_ddpmpp.py --workdir runs/fashion_mnist_ddpmpp --mode eval
  gl-jax --config experiments/fashion_mnist_ddpmpp.py:smoke --workdir /tmp/fmnist_ddpmpp_smoke  # seconds

The network is the DDPM++ U-Net of Song et al. 2021 (BigGAN residual blocks, skip rescaling, positional
embedding of 999 t) at 1.26M parameters (`ddpmpp-small`: 32 channels, 28 -> 14 -> 7, attention at 7x7), on
the continuous VP SDE. `--mode eval` samples with several solvers and NFE, computes FID against the
training set's Inception statistics, and the test set's bits/dim through the probability-flow ODE.
Needs `apt-get install dataset-fashion-mnist`. Target: recognisable garments after the hour; the numbers
it reaches are in the README.
"""

import ml_collections

from gl_jax.configs import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "fashion_mnist"
    c.data.batch_size = 64
    c.data.dequantize = True
    # No dropout: an hour is ~3 epochs, far from over-fitting, and dropout halves the progress per step.
    c.model = ml_collections.ConfigDict(dict(name="unet", variant="ddpmpp-small", dropout=0.0))
    c.sde = ml_collections.ConfigDict(dict(name="vp", beta_min=0.1, beta_max=20.0))
    c.loss.noise_cond = "999t"
    c.loss.prediction = "eps"
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 200
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 3000
    c.train.steps_per_call = 1
    c.train.log_every = 50
    c.train.checkpoint_every = 250
    c.train.eval_every = 1000
    c.train.ema_decay = 0.999
    # 3000 steps are ~3 / (1 - ema_decay): without the warm-up 5% of the EMA would still be the random
    # initialisation at the end, enough to turn its samples into noise.
    c.train.ema_warmup = True
    c.sample.sampler = "dpm_solver_pp"
    c.sample.steps = 20
    c.sample.num_samples = 64
    # An hour's training leaves the eps error at t ~ 1 large enough that, times sigma / alpha ~ 150, some
    # ODE trajectories leave the data range and end as saturated noise; clipping the denoised estimate to
    # [-1, 1] (Ho et al. 2020) keeps them on it.
    c.sample.threshold = "static"
    # --mode eval: the fastest solvers at NFE 10, 20, 35 and 100 (EDM's Heun at 18 levels is 35 NFE).
    c.eval.num_samples = 10_000
    c.eval.batch_size = 250
    c.eval.bpd_examples = 1000
    settings = {
        "dpm_solver_pp_2m_10": dict(sampler="dpm_solver_pp", steps=10),
        "unipc_3_10": dict(sampler="unipc", steps=10, options=dict(order=3)),
        "dpm_solver_pp_2m_20": dict(sampler="dpm_solver_pp", steps=20),
        "unipc_3_20": dict(sampler="unipc", steps=20, options=dict(order=3)),
        "edm_heun_35": dict(sampler="edm", steps=18),
        "dpm_solver_pp_3m_35": dict(sampler="dpm_solver_pp", steps=35, options=dict(order=3)),
        "dpm_solver_pp_3m_100": dict(sampler="dpm_solver_pp", steps=100, options=dict(order=3)),
        "ddim_100": dict(sampler="ddim", steps=100),
    }
    c.eval.settings = ml_collections.ConfigDict(settings)
    if variant == "smoke":
        c.model.variant = "tiny"
        c.data.batch_size = 8
        c.train.num_steps = 2
        c.train.log_every = 1
        c.train.checkpoint_every = 2
        c.train.eval_every = 0
        c.sample.steps = 4
        c.sample.num_samples = 4
        c.eval.num_samples = 8
        c.eval.batch_size = 8
        c.eval.bpd_examples = 4
        c.stats.max_images = 16
        c.eval.settings = ml_collections.ConfigDict(dict(unipc_3_4=settings["unipc_3_10"] | dict(steps=4)))
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of fashion_mnist_ddpmpp; use '' or 'smoke'.")
    return c
