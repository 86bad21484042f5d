"""A convolutional VAE on scikit-learn's 8x8 digits with a discretized-logistic decoder over the 17 pixel
levels (Kingma & Welling 2014; Salimans et al. 2017); reports IWAE bits/dim. Minutes on 2 CPU cores.

Launch:
  gl-jax --config experiments/digits_vae.py --workdir runs/digits_vae
  gl-jax --config experiments/digits_vae.py:smoke --workdir /tmp/digits_vae_smoke   # seconds

Its checkpoint is the autoencoder of experiments/digits_latent.py (which reads runs/digits_vae).
Target: the training metric elbo_bpd falls well below log2(17) = 4.09 bits/dim (a uniform model); samples
are decoder means, so blurry digits.
"""

import ml_collections

from gl_jax.configs import base_config, two_step_run


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.family = "vae"
    c.data.name = "sklearn_digits"
    c.data.batch_size = 128
    c.data.dequantize = False  # The decoder models the 17 integer levels themselves.
    # 8x8 -> a 4x4x2 latent.
    c.model = ml_collections.ConfigDict(
        dict(name="conv_vae", latent_channels=2, width=32, channel_mults=(1, 2), num_res_blocks=1)
    )
    c.vae = ml_collections.ConfigDict(
        dict(decoder="logistic", num_mixtures=1, kl_weight=1.0, iwae_samples=64, binarize="threshold")
    )
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 3000
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    c.train.eval_every = 1500
    c.train.ema_decay = 0.995
    c.sample.num_samples = 100
    if variant == "smoke":
        c.model.width = 8
        two_step_run(c, batch_size=16)
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of digits_vae; use '' or 'smoke'.")
    c.vae.lock()  # Unknown keys fail here, as in base_config's sections.
    return c
