"""Consistency training from data alone on the 2-D ring of Gaussians: improved consistency training (iCT,
Song & Dhariwal 2024) by default, the original CT (Song et al. 2023) in the `ct` variant.

iCT: no EMA target (the online network under stop-gradient), pseudo-Huber distance, log-normal level
sampling, 1 / (sigma_{n+1} - sigma_n) weighting, and N doubling from 10 to 1280 over the run. CT: squared
L2, an EMA target with mu(k) = exp(2 log 0.9 / N(k)), N growing from 2 to 150. The network is toy_vp's MLP
on the VP process with v-prediction (the consistency function at high noise is then close to -v, well
scaled), trained from scratch.

Launch:
  gl-jax --config experiments/toy_ct.py --workdir runs/toy_ict
  gl-jax --config experiments/toy_ct.py:ct --workdir runs/toy_ct
  gl-jax --config experiments/toy_ct.py:smoke --workdir /tmp/toy_ct_smoke   # seconds

Target: one- and two-step samples on the modes (tests/families/test_few_step.py measures them).
"""

import ml_collections

from gl_jax.configs import consistency_config, parse_variant


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    parts = parse_variant(variant, "toy_ct", allowed=("smoke", "ct"))
    smoke = "smoke" in parts
    method = "ct" if "ct" in parts else "ict"
    return consistency_config("toy_vp", method=method, smoke=smoke, num_steps=6000, lr=1e-3, prediction="v")
