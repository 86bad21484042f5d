"""Class-conditional score-based diffusion (VP SDE) on scikit-learn's 8x8 digits, with classifier-free
guidance: the model whose samples `--mode eval` scores by their usefulness (CAS, augmentation).

Launch:
  gl-jax --config experiments/digits_vp_cond.py --workdir runs/digits_vp_cond
  gl-jax --config experiments/digits_vp_cond.py:smoke --workdir /tmp/digits_cond_smoke   # seconds
  gl-jax --config experiments/digits_vp_cond.py --workdir runs/digits_vp_cond --mode eval
  gl-jax --workdir runs/digits_vp_cond --mode eval --config.sample.guidance=2.0   # another guidance

The network is the U-Net of `unet.py` at its smallest (`tiny`: 16 channels, 8x8 -> 4x4, attention at
4x4) with a learned label embedding added to the noise embedding; one label in ten is replaced by the
"no label" row in training (label dropout 0.1, Ho & Salimans 2022), so the one network gives both the
conditional and the unconditional score and sampling extrapolates between them with weight
`config.sample.guidance` (1: the plain conditional score). Sampling is DPM-Solver++(2M) at 20 steps with
the denoised estimate clipped to [-1, 1].

Target: a Classification Accuracy Score (Ravuri & Vinyals 2019) near the real-data classifier's, and
synthetic samples that raise accuracy when only 1 % of the real digits are at hand (`--mode eval`'s
`usefulness` entry; `benchmarks/usefulness.py` prints the tables). Minutes on 2 CPU cores.
"""

import ml_collections

from gl_jax.configs import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "sklearn_digits"
    c.data.batch_size = 128
    c.data.dequantize = False
    c.model = ml_collections.ConfigDict(
        dict(
            name="unet",
            variant="tiny",
            attention_resolutions=(4,),
            dropout=0.0,
            num_classes=10,
            label_dropout=0.1,
        )
    )
    c.sde = ml_collections.ConfigDict(dict(name="vp", beta_min=0.1, beta_max=20.0))
    c.loss.noise_cond = "999t"
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 3000
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.eval_every = 1500
    c.train.ema_decay = 0.995
    c.sample.sampler = "dpm_solver_pp"
    c.sample.steps = 20
    c.sample.threshold = "static"
    c.sample.guidance = 2.0
    c.sample.num_samples = 100
    # --mode eval: 1440 class-balanced samples (as many as the 1437 training digits) for the usefulness
    # entry, 2000 per setting for FID.
    c.eval.num_samples = 2000
    c.eval.batch_size = 250
    c.eval.bpd_examples = 360
    c.eval.settings = ml_collections.ConfigDict(
        dict(
            dpm_solver_pp_20=dict(sampler="dpm_solver_pp", steps=20),
            ddim_50=dict(sampler="ddim", steps=50),
        )
    )
    if variant == "smoke":
        c.model.channels = 8
        c.data.batch_size = 32
        c.train.num_steps = 4
        c.train.steps_per_call = 2
        c.train.log_every = 2
        c.train.checkpoint_every = 2
        c.train.eval_every = 0
        c.sample.steps = 5
        c.sample.num_samples = 10
        c.stats.max_images = 32
        c.eval.num_samples = 40
        c.eval.batch_size = 20
        c.eval.grid_size = 20
        c.eval.kid_subsets = 10
        c.eval.bpd_examples = 8
        c.eval.bpd_rtol = 1e-3
        c.eval.bpd_atol = 1e-3
        c.eval.settings = ml_collections.ConfigDict(
            dict(dpm_solver_pp_5=dict(sampler="dpm_solver_pp", steps=5))
        )
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of digits_vp_cond; use '' or 'smoke'.")
    return c
