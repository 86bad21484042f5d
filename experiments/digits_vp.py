"""Score-based diffusion (VP SDE) on scikit-learn's 8x8 digits: the main job, minutes on 2 CPU cores.

Launch:
  gl-jax --config experiments/digits_vp.py --workdir runs/digits_vp
  gl-jax --config experiments/digits_vp.py:smoke --workdir /tmp/digits_smoke   # seconds
  gl-jax --config experiments/digits_vp.py --workdir runs/digits_vp --mode eval  # FID/KID/P-R, bits/dim

Target: samples that look like digits (no published number for this dataset); see samples/*.png.
"""

import ml_collections

from gl_jax.configs import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "sklearn_digits"
    c.data.batch_size = 128
    c.data.dequantize = False  # Uniform noise on 17 levels would show in samples; use it for likelihoods.
    c.model = ml_collections.ConfigDict(
        dict(
            name="small_unet", channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,)
        )
    )
    c.sde = ml_collections.ConfigDict(dict(name="vp", beta_min=0.1, beta_max=20.0))
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 3500
    c.train.steps_per_call = 1
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.eval_every = 1750
    c.train.ema_decay = 0.995
    c.sample.steps = 500
    c.sample.num_samples = 100
    # --mode eval: ~7 min of Inception features per setting on 2 CPU cores (the statistics of the 1437
    # train images, --mode stats, about 5 min once).
    c.eval.num_samples = 2000
    c.eval.batch_size = 250
    c.eval.bpd_examples = 360  # The whole test split.
    c.eval.settings = ml_collections.ConfigDict(
        dict(
            em_500=dict(sampler="euler_maruyama", steps=500),
            ddim_50=dict(sampler="ddim", steps=50),
            ode_rk4_25=dict(sampler="ode", steps=25, options=dict(method="rk4")),
        )
    )
    if variant == "smoke":
        c.model.channels = 4
        c.data.batch_size = 32
        c.train.num_steps = 20
        c.train.steps_per_call = 2
        c.train.log_every = 10
        c.train.checkpoint_every = 10
        c.train.eval_every = 0
        c.sample.steps = 10
        c.sample.num_samples = 16
        c.stats.max_images = 32
        c.eval.num_samples = 32
        c.eval.batch_size = 16
        c.eval.grid_size = 16
        c.eval.kid_subsets = 10
        c.eval.bpd_examples = 8
        c.eval.bpd_rtol = 1e-3
        c.eval.bpd_atol = 1e-3
        c.eval.settings = ml_collections.ConfigDict(dict(em_10=dict(sampler="euler_maruyama", steps=10)))
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of digits_vp; use '' or 'smoke'.")
    return c
