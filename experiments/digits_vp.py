"""Score-based diffusion (VP SDE) on scikit-learn's 8x8 digits: the main job, minutes on 2 CPU cores.

Launch:
  gl-jax --config experiments/digits_vp.py --workdir runs/digits_vp
  gl-jax --config experiments/digits_vp.py:smoke --workdir /tmp/digits_smoke   # seconds

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
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of digits_vp; use '' or 'smoke'.")
    return c
