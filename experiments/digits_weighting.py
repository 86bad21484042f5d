"""Loss weightings as functions of log-SNR (Kingma & Gao 2023, "Understanding diffusion objectives") on
digits: the sigmoid weighting with a v-prediction network (Kingma & Gao 2023, sec. 5; Hoogeboom et al.
2024, SiD2), or min-SNR-gamma (Hang et al. 2023) in the `min_snr` variant.

The weighting is a function w(lambda) of the noise level alone (gl_jax/losses/weightings.py), the same
objective whatever the network predicts: switching `config.loss.prediction` between "eps", "x0" and "v"
changes the network's parametrisation, not the loss being minimised (tests/losses/test_weightings.py).
Times are drawn uniformly in the process's log-SNR range and importance-weighted back to the uniform-time
objective, which lowers the loss's variance without changing it.

Launch:
  gl-jax --config experiments/digits_weighting.py --workdir runs/digits_sigmoid
  gl-jax --config experiments/digits_weighting.py:min_snr --workdir runs/digits_min_snr
  gl-jax --config experiments/digits_weighting.py:smoke --workdir /tmp/digits_weighting_smoke   # seconds

Variants: "" (sigmoid, b = 2), min_snr (gamma = 5), and either with ",smoke".
Target: digit-like samples with DDIM-50 (not yet measured against digits_vp's sigma^2 weighting).
"""

import ml_collections

from gl_jax.configs import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    parts = [p for p in variant.split(",") if p]
    if any(p not in ("smoke", "min_snr") for p in parts):
        raise ValueError(
            f"Unknown variant {variant!r} of digits_weighting; use '', min_snr, smoke or min_snr,smoke."
        )
    c = base_config()
    c.data.name = "sklearn_digits"
    c.data.batch_size = 128
    c.model = ml_collections.ConfigDict(
        dict(
            name="small_unet", channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,)
        )
    )
    c.sde = ml_collections.ConfigDict(dict(name="vp", beta_min=0.1, beta_max=20.0))
    c.loss.prediction = "v"
    c.loss.time_sampling = "log_snr"
    if "min_snr" in parts:
        c.loss.weighting = "min_snr"
        c.loss.weighting_options = ml_collections.ConfigDict(dict(gamma=5.0))
    else:
        c.loss.weighting = "sigmoid"
        c.loss.weighting_options = ml_collections.ConfigDict(dict(bias=2.0))
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 3500
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.eval_every = 1750
    c.train.ema_decay = 0.995
    c.sample.sampler = "ddim"
    c.sample.steps = 50
    c.sample.num_samples = 100
    c.eval.num_samples = 2000
    c.eval.bpd_examples = 0
    c.eval.settings = ml_collections.ConfigDict(dict(ddim_50=dict(sampler="ddim", steps=50)))
    if "smoke" in parts:
        c.model.channels = 4
        c.data.batch_size = 32
        c.train.num_steps = 20
        c.train.steps_per_call = 2
        c.train.log_every = 10
        c.train.checkpoint_every = 10
        c.train.eval_every = 0
        c.sample.steps = 10
        c.sample.num_samples = 16
        c.stats.max_images = 32
        c.eval.num_samples = 32
        c.eval.batch_size = 16
        c.eval.grid_size = 16
        c.eval.kid_subsets = 10
        c.eval.settings = ml_collections.ConfigDict(dict(ddim_10=dict(sampler="ddim", steps=10)))
    return c
