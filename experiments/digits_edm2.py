"""EDM2's recipe at digits size (Karras et al. 2024, "Analyzing and improving the training dynamics of
diffusion models", CVPR): the magnitude-preserving U-Net (config G: forced weight normalisation, MP
sum/concat/SiLU, no biases or group norm) in EDM's parametrisation, trained with post-hoc EMA tracking.

The network is gl_jax/models/edm2_unet.py at a size that trains on 2 CPU cores; the family's optimizer puts
its weight rows back on the unit sphere after every update. The loss has EDM2's learned uncertainty
weighting (sec. 5: a small network u of the noise level, the loss l / e^u + u) and its log-normal noise
levels with the options spelled out. The run saves EDM2's sigma_rel 0.05/0.10
averages every 100 steps, so `--mode eval` can choose the EMA length afterwards (as digits_phema).

Launch:
  gl-jax --config experiments/digits_edm2.py --workdir runs/digits_edm2
  gl-jax --config experiments/digits_edm2.py --workdir runs/digits_edm2 --mode eval
  gl-jax --config experiments/digits_edm2.py:smoke --workdir /tmp/digits_edm2_smoke   # seconds
  # Autoguidance (Karras et al. 2024, NeurIPS): guided by the same run's step-500 checkpoint.
  gl-jax --config experiments/digits_edm2.py --workdir runs/digits_edm2 --mode eval \
    --config.sample.guide_checkpoint=runs/digits_edm2 --config.sample.guide_step=500 \
    --config.sample.guide_weight=2.0

Target: digit-like samples with EDM's Heun sampler (not yet measured on this data); the published sizes
are the variants edm2-img512-xs ... -xxl (64x64x4 latents) and edm2-cifar10-small (32x32x3).
"""

import ml_collections

from gl_jax.configs import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"Unknown variant {variant!r} of digits_edm2; use '' or 'smoke'.")
    c = base_config()
    c.data.name = "sklearn_digits"
    c.data.batch_size = 128
    c.data.dequantize = False
    # 8x8 images: two resolutions (8, 4), attention at 4.
    c.model = ml_collections.ConfigDict(
        dict(
            name="edm2",
            channels=32,
            channel_mults=(1, 2),
            num_res_blocks=2,
            attention_resolutions=(4,),
            channels_per_head=32,
            dropout=0.0,
        )
    )
    c.sde = ml_collections.ConfigDict(dict(name="edm", sigma_min=0.002, sigma_max=80.0))
    c.loss.prediction = "x0"
    c.loss.noise_cond = "sigma"
    c.loss.weighting = "edm"
    c.loss.time_sampling = "edm"
    c.loss.time_sampling_options = ml_collections.ConfigDict(dict(p_mean=-1.2, p_std=1.2))
    c.loss.uncertainty = True
    c.loss.uncertainty_options = ml_collections.ConfigDict(dict(features=128))
    # EDM2 trains with Adam (beta2 0.99) without gradient clipping; the weight projection bounds the step.
    c.optim.lr = 1e-2
    c.optim.b2 = 0.99
    c.optim.grad_clip = 0.0
    c.optim.warmup_steps = 200
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 4000
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.eval_every = 2000
    c.train.ema_decay = 0.995
    c.posthoc_ema.every = 100
    c.posthoc_ema.sigma_rels = (0.05, 0.10)
    c.sample.sampler = "edm"
    c.sample.steps = 18
    c.sample.num_samples = 100
    c.eval.num_samples = 1000
    c.eval.bpd_examples = 0
    c.eval.settings = ml_collections.ConfigDict(dict(heun_18=dict(sampler="edm", steps=18)))
    c.eval.posthoc_sigma_rels = (0.03, 0.05, 0.08, 0.12, 0.17)
    if variant == "smoke":
        c.model.channels = 8
        c.model.num_res_blocks = 1
        c.model.channels_per_head = 16
        c.data.batch_size = 32
        c.train.num_steps = 20
        c.train.steps_per_call = 2
        c.train.log_every = 10
        c.train.checkpoint_every = 10
        c.train.eval_every = 0
        c.posthoc_ema.every = 10
        c.sample.steps = 5
        c.sample.num_samples = 16
        c.stats.max_images = 32
        c.eval.num_samples = 32
        c.eval.batch_size = 16
        c.eval.grid_size = 16
        c.eval.kid_subsets = 10
        c.eval.posthoc_sigma_rels = (0.05, 0.08)
        c.eval.settings = ml_collections.ConfigDict(dict(heun_5=dict(sampler="edm", steps=5)))
    return c
