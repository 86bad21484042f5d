"""Classifier-free guidance limited to an interval of noise levels (Kynkaanniemi et al. 2024, "Applying
guidance in a limited interval improves sample and distribution quality in diffusion models") on the
class-conditional digits recipe (digits_vp_cond).

Guidance is applied only where the noise level sigma / alpha lies in config.sample.guidance_interval
(EDM2-S on ImageNet-512 uses (0.28, 5.42) with w = 2.12; the interval here is that one, not tuned on
digits); elsewhere the conditional score alone is used. Compare with the same run sampled with
`--config.sample.guidance_interval="()"` (guidance at every level).

Launch:
  gl-jax --config experiments/digits_guidance.py --workdir runs/digits_guidance
  gl-jax --config experiments/digits_guidance.py --workdir runs/digits_guidance --mode eval
  gl-jax --config experiments/digits_guidance.py:smoke --workdir /tmp/digits_guidance_smoke   # seconds

Target: CAS and FID at least as good as guidance at every level with the same w (not yet measured).
"""

import ml_collections

from gl_jax.experiments import get_config as experiment_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "smoke"):
        raise ValueError(f"Unknown variant {variant!r} of digits_guidance; use '' or 'smoke'.")
    c = experiment_config(f"digits_vp_cond:{variant}")
    c.sample.guidance = 2.0
    c.sample.guidance_interval = (0.28, 5.42)
    return c
