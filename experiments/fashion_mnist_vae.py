"""A convolutional VAE on Fashion-MNIST (28x28) with a discretized-logistic mixture decoder over the 256
pixel levels (Kingma & Welling 2014; Salimans et al. 2017); reports IWAE bits/dim (Burda et al. 2016).

Launch:
  gl-jax --config experiments/fashion_mnist_vae.py --workdir runs/fashion_mnist_vae
  gl-jax --config experiments/fashion_mnist_vae.py:smoke --workdir /tmp/fmnist_vae_smoke   # seconds

Needs `apt-get install dataset-fashion-mnist`. Its checkpoint is the autoencoder of
experiments/fashion_mnist_latent.py (which reads runs/fashion_mnist_vae).
Target: elbo_bpd well below 8 bits/dim (uniform); a CPU run of the default is about an hour.
"""

import ml_collections

from gl_jax.configs import base_config, two_step_run


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.family = "vae"
    c.data.name = "fashion_mnist"
    c.data.batch_size = 64
    c.data.dequantize = False
    # 28x28 -> a 7x7x4 latent.
    c.model = ml_collections.ConfigDict(
        dict(name="conv_vae", latent_channels=4, width=32, channel_mults=(1, 2, 2), num_res_blocks=1)
    )
    c.vae = ml_collections.ConfigDict(
        dict(decoder="logistic", num_mixtures=3, kl_weight=1.0, iwae_samples=64, binarize="threshold")
    )
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 200
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 20_000
    c.train.steps_per_call = 10
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    c.train.eval_every = 5000
    c.train.ema_decay = 0.999
    c.sample.num_samples = 64
    if variant == "smoke":
        c.model.width = 8
        c.model.channel_mults = (1, 2)
        c.model.latent_channels = 2
        two_step_run(c, batch_size=8)
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of fashion_mnist_vae; use '' or 'smoke'.")
    c.vae.lock()  # Unknown keys fail here, as in base_config's sections.
    return c
