"""Post-hoc EMA (EDM2, Karras et al. 2024, sec. 3) on the digits_vp recipe: train once, choose the EMA
length afterwards.

The run tracks the power-function EMAs of sigma_rel 0.05 and 0.10 (EDM2's pair) and saves them every 100
steps to <workdir>/phema; `--mode eval` reconstructs each width of config.eval.posthoc_sigma_rels from
those snapshots (a least-squares fit of the saved profiles, gl_jax/train/posthoc_ema.py) and reports its
FID, writing eval/posthoc_ema.md (the table) and eval/posthoc_ema.png (FID against sigma_rel).

Launch:
  gl-jax --config experiments/digits_phema.py --workdir runs/digits_phema
  gl-jax --config experiments/digits_phema.py --workdir runs/digits_phema --mode eval
  gl-jax --config experiments/digits_phema.py:smoke --workdir /tmp/digits_phema_smoke   # seconds

Target: an FID-vs-sigma_rel curve with its minimum inside the swept range (EDM2, fig. 5: the best width
depends on the model and the training length, which is why it is chosen afterwards).
"""

import ml_collections

from gl_jax.experiments import get_config as experiment_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"Unknown variant {variant!r} of digits_phema; use '' or 'smoke'.")
    c = experiment_config(f"digits_vp:{variant}")
    c.posthoc_ema.every = 100
    c.posthoc_ema.sigma_rels = (0.05, 0.10)
    # Sampling uses the plain EMA; the sweep below compares the post-hoc widths on one sampler setting.
    c.eval.posthoc_sigma_rels = (0.02, 0.04, 0.06, 0.08, 0.10, 0.13, 0.17)
    c.eval.num_samples = 1000  # Per width: ~3 min of Inception features on 2 CPU cores.
    c.eval.bpd_examples = 0
    c.eval.settings = ml_collections.ConfigDict(dict(ddim_50=dict(sampler="ddim", steps=50)))
    if variant == "smoke":
        c.posthoc_ema.every = 10  # A multiple of steps_per_call (2).
        c.eval.posthoc_sigma_rels = (0.05, 0.08)
        c.eval.num_samples = 32
        c.eval.settings = ml_collections.ConfigDict(dict(ddim_10=dict(sampler="ddim", steps=10)))
    return c
