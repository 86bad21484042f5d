"""Consistency training from data alone on scikit-learn's 8x8 digits: improved consistency training (iCT,
Song & Dhariwal 2024) by default, the original CT (Song et al. 2023) in the `ct` variant.

iCT: no EMA target (the online network under stop-gradient), pseudo-Huber distance, log-normal level
sampling, 1 / (sigma_{n+1} - sigma_n) weighting, and N doubling from 10 to 1280 over the run. CT: squared
L2, an EMA target with mu(k) = exp(2 log 0.9 / N(k)), N growing from 2 to 150. The network is digits_vp's
MLP on the VP process with v-prediction (the consistency function at high noise is then close to -v, well
scaled), trained from scratch.

Launch:
  gl-jax --config experiments/digits_ct.py --workdir runs/digits_ict
  gl-jax --config experiments/digits_ct.py:ct --workdir runs/digits_ct
  gl-jax --config experiments/digits_ct.py:smoke --workdir /tmp/digits_ct_smoke   # seconds

Target: FID at 1 and 2 steps near CD's (not yet measured on this data; tests/families/test_few_step.py
measures iCT and CT on Gaussian mixtures).
"""

import ml_collections

from gl_jax.configs import consistency_config, parse_variant


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    parts = parse_variant(variant, "digits_ct", allowed=("smoke", "ct"))
    smoke = "smoke" in parts
    method = "ct" if "ct" in parts else "ict"
    return consistency_config(
        "digits_vp", method=method, smoke=smoke, num_steps=4000, lr=2e-4, prediction="v"
    )
