"""Score-based diffusion (VP SDE) on Fashion-MNIST (from Debian's dataset-fashion-mnist), 28x28.

Launch:
  gl-jax --config experiments/fashion_mnist_vp.py --workdir runs/fashion_mnist_vp
  gl-jax --config experiments/fashion_mnist_vp.py:smoke --workdir /tmp/fmnist_smoke   # seconds

Needs `apt-get install dataset-fashion-mnist` (the data is converted to array_record on first use).
Target: recognisable garments in samples/*.png; a CPU run of the default is a few hours.
"""

import ml_collections

from gl_jax.configs import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "fashion_mnist"
    c.data.batch_size = 128
    c.data.dequantize = True
    c.model = ml_collections.ConfigDict(
        dict(
            name="small_unet",
            channels=32,
            channel_mults=(1, 2, 2),
            num_res_blocks=1,
            attention_resolutions=(7,),
        )
    )
    c.sde = ml_collections.ConfigDict(dict(name="vp", beta_min=0.1, beta_max=20.0))
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 500
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 20_000
    c.train.steps_per_call = 10
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    c.train.eval_every = 2000
    c.train.ema_decay = 0.999
    c.sample.steps = 500
    c.sample.num_samples = 64
    if variant == "smoke":
        c.model.channels = 8
        c.model.channel_mults = (1, 2)
        c.model.attention_resolutions = ()
        c.data.batch_size = 16
        c.train.num_steps = 4
        c.train.steps_per_call = 2
        c.train.log_every = 2
        c.train.checkpoint_every = 2
        c.train.eval_every = 0
        c.sample.steps = 5
        c.sample.num_samples = 4
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of fashion_mnist_vp; use '' or 'smoke'.")
    return c
