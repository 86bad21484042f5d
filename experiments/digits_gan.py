"""A DCGAN-style GAN on scikit-learn's 8x8 digits: non-saturating loss with the R1 penalty (Goodfellow et al.
2014; Mescheder et al. 2018), an EMA generator; minutes on 2 CPU cores.

Launch:
  gl-jax --config experiments/digits_gan.py --workdir runs/digits_gan
  gl-jax --config experiments/digits_gan.py:smoke --workdir /tmp/digits_gan_smoke   # seconds

Other objectives by override: `--config.gan.objective=hinge --config.model.spectral_norm=True` (Miyato et
al. 2018), or `--config.gan.objective=wasserstein --config.gan.r1_weight=0 --config.gan.gp_weight=10
--config.gan.n_critic=5` (Gulrajani et al. 2017).
Target: samples that look like digits (no published number for this dataset); see samples/*.png.
"""

import ml_collections

from gl_jax.configs import base_config, two_step_run


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.family = "gan"
    c.data.name = "sklearn_digits"
    c.data.batch_size = 128
    c.data.dequantize = False
    c.model = ml_collections.ConfigDict(
        dict(name="dcgan", latent_dim=32, generator_width=32, discriminator_width=32, spectral_norm=False)
    )
    c.gan = ml_collections.ConfigDict(
        dict(
            objective="non_saturating",
            r1_weight=1.0,
            gp_weight=0.0,
            n_critic=1,
            # DCGAN's Adam (Radford et al. 2016): lr 2e-4, beta1 0.5, for both players.
            generator_optim=dict(lr=2e-4, b1=0.5, b2=0.999),
            discriminator_optim=dict(lr=2e-4, b1=0.5, b2=0.999),
        )
    )
    c.optim.grad_clip = 0.0  # GAN updates are not clipped in the papers above.
    c.train.num_steps = 5000
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.train.eval_every = 2500
    c.train.ema_decay = 0.999
    c.sample.num_samples = 100
    if variant == "smoke":
        c.model.latent_dim = 8
        c.model.generator_width = 4
        c.model.discriminator_width = 4
        two_step_run(c, batch_size=16)
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of digits_gan; use '' or 'smoke'.")
    c.gan.lock()  # Unknown keys fail here, as in base_config's sections.
    return c
