"""Latent diffusion on Fashion-MNIST (Rombach et al. 2022): a VP-SDE diffusion model on the 7x7x4 latents
of the VAE of experiments/fashion_mnist_vae.py, sampled in latent space and decoded.

Launch (the VAE first; this config reads its checkpoint from runs/fashion_mnist_vae):
  gl-jax --config experiments/fashion_mnist_vae.py --workdir runs/fashion_mnist_vae
  gl-jax --config experiments/fashion_mnist_latent.py --workdir runs/fashion_mnist_latent
  gl-jax --config experiments/fashion_mnist_latent.py:smoke --workdir /tmp/fmnist_latent_smoke   # seconds;
      a random VAE unless --config.latent.vae_checkpoint names a VAE run

Needs `apt-get install dataset-fashion-mnist`. The diffusion runs on 196 numbers per image instead of 784,
so each step is cheaper than pixel-space diffusion (experiments/fashion_mnist_vp.py).
Target: recognisable garments in samples/*.png.
"""

import ml_collections

from gl_jax.configs import base_config, two_step_run
from gl_jax.experiments import get_config as experiment_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"Unknown variant {variant!r} of fashion_mnist_latent; use '' or 'smoke'.")
    vae = experiment_config(f"fashion_mnist_vae:{variant}")  # The VAE run whose checkpoint this one reads.
    c = base_config()
    c.family = "latent"
    c.data.name = "fashion_mnist"
    c.data.batch_size = 128
    c.data.dequantize = vae.data.dequantize
    c.latent = ml_collections.ConfigDict(
        dict(
            vae_checkpoint="runs/fashion_mnist_vae",
            vae_model=vae.model,
            vae=vae.vae,
            vae_step=-1,
            vae_use_ema=True,
            allow_random_vae=False,
            encode="sample",
            scale=1.0,  # Check the training metric latent_ms (mean square of the latents): ~1 is right.
        )
    )
    # 7x7 latents cannot be halved: one resolution.
    c.model = ml_collections.ConfigDict(
        dict(name="small_unet", channels=64, channel_mults=(1,), num_res_blocks=2, attention_resolutions=(7,))
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
    c.train.eval_every = 5000
    c.train.ema_decay = 0.999
    c.sample.steps = 500
    c.sample.num_samples = 64
    if variant == "smoke":
        c.latent.vae_checkpoint = ""
        c.latent.allow_random_vae = True
        c.model.channels = 4
        c.model.num_res_blocks = 1
        c.model.attention_resolutions = ()
        two_step_run(c, batch_size=8)
        c.sample.steps = 5
    c.latent.lock()  # Unknown keys fail here, as in base_config's sections.
    return c
