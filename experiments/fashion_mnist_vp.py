"""Score-based diffusion (VP SDE) on Fashion-MNIST (from Debian's dataset-fashion-mnist), 28x28.

Launch:
  gl-jax --config experiments/fashion_mnist_vp.py --workdir runs/fashion_mnist_vp
  gl-jax --config experiments/fashion_mnist_vp.py:smoke --workdir /tmp/fmnist_smoke   # seconds
  gl-jax --config experiments/fashion_mnist_vp.py --workdir runs/fashion_mnist_vp --mode eval

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
    # --mode eval: 10k samples per setting (config.eval.num_samples) against the 60k train images; meant
    # for a GPU (on 2 CPU cores the FID Inception alone takes ~0.2 s an image).
    c.eval.settings = ml_collections.ConfigDict(
        dict(
            em_500=dict(sampler="euler_maruyama", steps=500),
            ddim_100=dict(sampler="ddim", steps=100),
            dpm_solver_pp_20=dict(sampler="dpm_solver_pp", steps=20),
        )
    )
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
        c.stats.max_images = 16
        c.eval.num_samples = 16
        c.eval.batch_size = 8
        c.eval.grid_size = 16
        c.eval.kid_subsets = 10
        c.eval.bpd_examples = 4
        c.eval.bpd_rtol = 1e-3
        c.eval.bpd_atol = 1e-3
        c.eval.settings = ml_collections.ConfigDict(dict(em_5=dict(sampler="euler_maruyama", steps=5)))
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of fashion_mnist_vp; use '' or 'smoke'.")
    return c
