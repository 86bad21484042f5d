"""Differentially private score-based diffusion (VP SDE) on scikit-learn's 8x8 digits at epsilon <= 10.

Launch:
  gl-jax --config experiments/digits_vp_dp.py --workdir runs/digits_vp_dp
  gl-jax --config experiments/digits_vp_dp.py:smoke --workdir /tmp/digits_dp_smoke   # seconds
  gl-jax --config experiments/digits_vp_dp.py --workdir runs/digits_vp_dp --mode eval  # FID/KID/P-R

DP-SGD (Abadi et al. 2016) on the one train step, `gl_jax/train/privacy.py`: each step draws every one of
the 1437 training digits independently with probability q = 128 / 1437 (Poisson sampling, in 176 slots:
a random 176 kept in the rare step that draws more, which the accountant counts), clips each example's
gradient to C = 0.25 after averaging its loss over K = 4 draws of diffusion time and noise (DPDM's noise
multiplicity, Dockhorn et al. 2022), adds N(0, sigma^2 C^2) with sigma = 1.6 to the sum and divides by
128. dp_accounting's PLD accountant gives epsilon = 9.91 at delta = 1e-5 after the 1000 steps
(`train/epsilon` in the logs); more steps are refused before the run starts.

In the spirit of DPDM for small data: C below the gradients' norms (every example clipped, so the noise
is sigma per clipped unit; at C = 1 most are not, and the noise is larger than it needs to be), noise
multiplicity, a small network (the noise norm grows with the square root of the parameter
count), the EMA of the parameters (post-processing: no privacy cost) and an expected batch size chosen
from the accountant: at a fixed epsilon, sigma / B grows about like the square root of the steps, so
on 1437 examples fewer, smaller steps carry about as much signal as many large ones, for less compute.
Target: epsilon <= 10 (delta = 1e-5) and digit-like samples; its FID beside the non-private
`digits_vp`'s is in the README.
"""

import ml_collections

from gl_jax.configs import base_config, two_step_run


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"Unknown variant {variant!r} of digits_vp_dp; use '' or 'smoke'.")
    c = base_config()
    c.data.name = "sklearn_digits"
    c.data.batch_size = 176  # Slots: B + 4 sqrt(B), rounded up to a multiple of 8.
    c.model = ml_collections.ConfigDict(
        dict(
            name="small_unet", channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,)
        )
    )
    c.sde = ml_collections.ConfigDict(dict(name="vp", beta_min=0.1, beta_max=20.0))
    c.privacy.update(
        dict(
            enabled=True,
            clip_norm=0.25,
            noise_multiplier=1.6,
            expected_batch_size=128,
            multiplicity=4,
            delta=1e-5,
            target_epsilon=10.0,
        )
    )
    c.optim.update(dict(lr=5e-3, warmup_steps=0, schedule="cosine", min_lr_ratio=0.05, grad_clip=0.0))
    c.train.update(
        dict(
            num_steps=1000,
            log_every=50,
            checkpoint_every=250,
            eval_every=500,
            ema_decay=0.999,
            ema_warmup=True,
        )
    )
    c.sample.update(dict(steps=500, num_samples=100))
    # --mode eval as in digits_vp, so that the two FIDs compare.
    c.eval.update(dict(num_samples=2000, batch_size=250, bpd_examples=360))
    c.eval.settings = ml_collections.ConfigDict(
        dict(
            em_500=dict(sampler="euler_maruyama", steps=500),
            ddim_50=dict(sampler="ddim", steps=50),
            ode_rk4_25=dict(sampler="ode", steps=25, options=dict(method="rk4")),
        )
    )
    if variant == "smoke":
        two_step_run(c, batch_size=16)
        c.model.channels = 4
        c.privacy.update(dict(expected_batch_size=8, multiplicity=2))
        c.sample.steps = 10
        c.stats.max_images = 32
        c.eval.update(dict(num_samples=32, batch_size=16, grid_size=16, kid_subsets=10, bpd_examples=8))
        c.eval.update(dict(bpd_rtol=1e-3, bpd_atol=1e-3))
        c.eval.settings = ml_collections.ConfigDict(dict(em_10=dict(sampler="euler_maruyama", steps=10)))
    return c
