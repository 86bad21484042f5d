"""Score-based diffusion (VP SDE) on scikit-learn's 8x8 digits with a DiT denoiser (Peebles & Xie 2023).

Launch:
  gl-jax --config experiments/digits_dit.py --workdir runs/digits_dit
  gl-jax --config experiments/digits_dit.py:smoke --workdir /tmp/digits_dit_smoke   # seconds
  gl-jax --config experiments/digits_dit.py --workdir runs/digits_dit --mode eval  # FID/KID/P-R, bits/dim

The U-Net of experiments/digits_vp.py replaced by a transformer on 2x2 patches (16 tokens per image),
conditioned on 999 t through adaLN-Zero as in DiT; unconditional, eps prediction. Target: samples that
look like digits (no published number for this dataset; not yet measured here); see samples/*.png.
"""

import ml_collections

from gl_jax.configs import base_config, two_step_run


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"Unknown variant {variant!r} of digits_dit; use '' or 'smoke'.")
    c = base_config()
    c.data.name = "sklearn_digits"
    c.model = ml_collections.ConfigDict(dict(name="dit", patch_size=2, hidden_size=128, depth=6, num_heads=4))
    c.loss.noise_cond = "999t"  # DiT embeds the DDPM step index.
    c.optim.update(dict(lr=1e-3, warmup_steps=200, schedule="cosine", min_lr_ratio=0.05))
    c.train.update(dict(num_steps=4000, eval_every=2000, ema_decay=0.995))
    c.sample.update(dict(sampler="dpm_solver_pp", steps=20, num_samples=100))
    c.eval.update(dict(num_samples=2000, bpd_examples=360))  # bits/dim on the whole test split.
    if variant == "smoke":
        c.model.update(dict(hidden_size=16, depth=1, num_heads=2, frequency_embedding_size=16))
        two_step_run(c, batch_size=16)
        c.sample.steps = 4
        c.stats.max_images = 16
        c.eval.update(dict(num_samples=8, batch_size=8, bpd_examples=4))
    return c
