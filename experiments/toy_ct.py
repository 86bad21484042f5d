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

from gl_jax.configs import parse_variant, student_of


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    parts = parse_variant(variant, "toy_ct", allowed=("smoke", "ct"))
    smoke = "smoke" in parts
    c = student_of("toy_vp", smoke=smoke)
    c.family = "consistency"
    c.loss.prediction = "v"
    method = "ct" if "ct" in parts else "ict"
    c.consistency = ml_collections.ConfigDict(dict(method=method, sigma_min=0.002, sigma_max=80.0))
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "constant"
    c.train.ema_decay = 0.99
    c.sample.sampler = "consistency"
    c.sample.steps = 1
    c.eval.bpd_examples = 0
    c.eval.settings = ml_collections.ConfigDict(
        {f"cm_{k}": dict(sampler="consistency", steps=k) for k in (1, 2, 4)}
    )
    if smoke:
        c.eval.settings = ml_collections.ConfigDict(dict(cm_1=dict(sampler="consistency", steps=1)))
    else:
        c.train.num_steps = 6000
        c.train.checkpoint_every = 1000
        c.train.eval_every = 3000
    return c
