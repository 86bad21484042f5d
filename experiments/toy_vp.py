"""Score-based diffusion (VP SDE) on a 2-D toy distribution (default: a ring of 8 Gaussians).

Launch:
  gl-jax --config experiments/toy_vp.py --workdir runs/toy_vp
  gl-jax --config experiments/toy_vp.py:checkerboard --workdir runs/toy_checkerboard
  gl-jax --config experiments/toy_vp.py:smoke --workdir /tmp/toy_smoke   # seconds

Variants: a toy distribution name (gmm_2d, gmm_16d, gmm_64d, checkerboard, two_moons, swiss_roll) or smoke.
Target: samples on the modes in samples/*.png (the data is drawn behind them in grey).
"""

import ml_collections

from gl_jax.configs import base_config
from gl_jax.data.toy import DISTRIBUTIONS


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    smoke = variant == "smoke"
    name = "gmm_2d" if smoke or not variant else variant
    if name not in DISTRIBUTIONS:
        raise ValueError(
            f"Unknown variant {variant!r} of toy_vp; use smoke or one of {sorted(DISTRIBUTIONS)}."
        )
    c.data.name = f"toy/{name}"
    c.data.batch_size = 256
    c.model = ml_collections.ConfigDict(dict(name="mlp", features=(256, 256, 256), embed_dim=64))
    c.sde = ml_collections.ConfigDict(dict(name="vp", beta_min=0.1, beta_max=20.0))
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 5000
    c.train.steps_per_call = 10
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.train.eval_every = 2500
    c.train.ema_decay = 0.999
    c.sample.steps = 500
    c.sample.num_samples = 2000
    if smoke:
        c.model.features = (32, 32)
        c.data.batch_size = 64
        c.train.num_steps = 20
        c.train.steps_per_call = 5
        c.train.log_every = 10
        c.train.checkpoint_every = 10
        c.train.eval_every = 0
        c.sample.steps = 10
        c.sample.num_samples = 64
    return c
