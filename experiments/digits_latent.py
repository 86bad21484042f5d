"""Latent diffusion on scikit-learn's 8x8 digits (Rombach et al. 2022): a VP-SDE diffusion model on the
4x4x2 latents of the VAE of experiments/digits_vae.py, sampled in latent space and decoded.

Launch (the VAE first; this config reads its checkpoint from runs/digits_vae):
  gl-jax --config experiments/digits_vae.py --workdir runs/digits_vae
  gl-jax --config experiments/digits_latent.py --workdir runs/digits_latent
  gl-jax --config experiments/digits_latent.py:smoke --workdir /tmp/digits_latent_smoke   # seconds;
      a random VAE unless --config.latent.vae_checkpoint names a VAE run

Target: samples that look like digits, sharper than the VAE's own prior samples.
"""

import ml_collections

from gl_jax.configs import base_config, two_step_run
from gl_jax.experiments import get_config as experiment_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"Unknown variant {variant!r} of digits_latent; use '' or 'smoke'.")
    vae = experiment_config(f"digits_vae:{variant}")  # The VAE run whose checkpoint this one reads.
    c = base_config()
    c.family = "latent"
    c.data.name = "sklearn_digits"
    c.data.batch_size = 128
    c.data.dequantize = vae.data.dequantize  # The encoder sees what it saw in training.
    c.latent = ml_collections.ConfigDict(
        dict(
            vae_checkpoint="runs/digits_vae",
            vae_model=vae.model,
            vae=vae.vae,
            vae_step=-1,
            vae_use_ema=True,
            allow_random_vae=False,
            encode="sample",
            scale=1.0,  # Check the training metric latent_ms (mean square of the latents): ~1 is right.
        )
    )
    c.model = ml_collections.ConfigDict(
        dict(name="small_unet", channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=())
    )
    c.sde = ml_collections.ConfigDict(dict(name="vp", beta_min=0.1, beta_max=20.0))
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 3000
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    c.train.eval_every = 1500
    c.train.ema_decay = 0.995
    c.sample.steps = 200
    c.sample.num_samples = 100
    if variant == "smoke":
        c.latent.vae_checkpoint = ""
        c.latent.allow_random_vae = True
        c.model.channels = 4
        two_step_run(c, batch_size=16)
        c.sample.steps = 5
    c.latent.lock()  # Unknown keys fail here, as in base_config's sections.
    return c
