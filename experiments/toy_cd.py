"""Consistency distillation (Song et al. 2023, CD) of the toy_vp diffusion model on the 2-D ring of Gaussians.

The student is toy_vp's network on its VP process, read in EDM's sigma space with the consistency boundary
condition, and starts from the teacher's parameters; each loss term compares it at sigma_{n+1} with its
EMA target (mu = 0.95) one teacher Heun step lower, on N = 18 levels (gl_jax/families/consistency.py).

Launch (train the teacher first):
  gl-jax --config experiments/toy_vp.py --workdir runs/toy_vp
  gl-jax --config experiments/toy_cd.py --workdir runs/toy_cd
  gl-jax --config experiments/toy_cd.py:smoke --workdir /tmp/toy_cd_smoke   # seconds, a random teacher

Target: one-step samples on the modes, close to the teacher's (tests/families/test_few_step.py measures
the sliced Wasserstein distance of CD with the exact score as teacher).
"""

import ml_collections

from gl_jax.configs import parse_variant, student_of


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    smoke = "smoke" in parse_variant(variant, "toy_cd")
    c = student_of("toy_vp", smoke=smoke)
    c.family = "consistency"
    c.consistency = ml_collections.ConfigDict(
        dict(
            method="cd",
            teacher_checkpoint="runs/toy_vp",
            num_levels=18,
            target_decay=0.95,
            sigma_min=0.002,
            sigma_max=80.0,
        )
    )
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.train.ema_decay = 0.99
    c.sample.sampler = "consistency"
    c.sample.steps = 1
    c.eval.bpd_examples = 0
    c.eval.settings = ml_collections.ConfigDict(
        {f"cm_{k}": dict(sampler="consistency", steps=k) for k in (1, 2, 4)}
    )
    if smoke:
        c.consistency.teacher_checkpoint = ""
        c.consistency.allow_random_teacher = True
        c.eval.settings = ml_collections.ConfigDict(dict(cm_1=dict(sampler="consistency", steps=1)))
    else:
        c.train.num_steps = 3000
        c.train.checkpoint_every = 1000
        c.train.eval_every = 1500
    return c
