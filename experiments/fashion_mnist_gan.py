"""A DCGAN-style GAN on Fashion-MNIST (28x28): hinge loss with a spectrally normalised discriminator
(Miyato et al. 2018) and an EMA generator.

Launch:
  gl-jax --config experiments/fashion_mnist_gan.py --workdir runs/fashion_mnist_gan
  gl-jax --config experiments/fashion_mnist_gan.py:smoke --workdir /tmp/fmnist_gan_smoke   # seconds

Needs `apt-get install dataset-fashion-mnist`. Miyato et al.'s Adam settings: lr 2e-4, beta1 0, beta2 0.9.
Target: recognisable garments in samples/*.png; a CPU run of the default is about an hour.
"""

import ml_collections

from gl_jax.configs import base_config, two_step_run


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.family = "gan"
    c.data.name = "fashion_mnist"
    c.data.batch_size = 64
    c.data.dequantize = False
    c.model = ml_collections.ConfigDict(
        dict(name="dcgan", latent_dim=64, generator_width=64, discriminator_width=64, spectral_norm=True)
    )
    c.gan = ml_collections.ConfigDict(
        dict(
            objective="hinge",
            r1_weight=0.0,
            gp_weight=0.0,
            n_critic=1,
            generator_optim=dict(lr=2e-4, b1=0.0, b2=0.9),
            discriminator_optim=dict(lr=2e-4, b1=0.0, b2=0.9),
        )
    )
    c.optim.grad_clip = 0.0
    c.train.num_steps = 20_000
    c.train.steps_per_call = 10
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    c.train.eval_every = 2000
    c.train.ema_decay = 0.999
    c.sample.num_samples = 64
    if variant == "smoke":
        c.model.latent_dim = 8
        c.model.generator_width = 4
        c.model.discriminator_width = 4
        two_step_run(c, batch_size=8)
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of fashion_mnist_gan; use '' or 'smoke'.")
    c.gan.lock()  # Unknown keys fail here, as in base_config's sections.
    return c
