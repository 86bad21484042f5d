"""Progressive distillation (Salimans & Ho 2022) of the toy_vp diffusion model on the 2-D ring of Gaussians:
16 DDIM steps of the teacher halved three times to a 2-step student, in one run.

The student is toy_vp's network, starting from its parameters, read as v-prediction (the teacher's round
is read as the eps-prediction it was trained for); every 1,000 updates the student replaces the teacher
and the steps halve (gl_jax/families/progressive.py).

Launch (train the teacher first):
  gl-jax --config experiments/toy_vp.py --workdir runs/toy_vp
  gl-jax --config experiments/toy_pd.py --workdir runs/toy_pd
  gl-jax --config experiments/toy_pd.py:smoke --workdir /tmp/toy_pd_smoke   # seconds, a random teacher

Target: the 2-step student's samples close to the teacher's 16-step DDIM samples from the same noise
(tests/families/test_few_step.py measures the match with the exact score as teacher).
"""

import ml_collections

from gl_jax.configs import parse_variant, student_of


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    smoke = "smoke" in parse_variant(variant, "toy_pd")
    c = student_of("toy_vp", smoke=smoke)
    c.family = "progressive"
    c.loss.prediction = "v"
    c.progressive = ml_collections.ConfigDict(
        dict(teacher_checkpoint="runs/toy_vp", teacher_prediction="eps", teacher_steps=16, rounds=3)
    )
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.train.ema_decay = 0.99
    c.sample.sampler = "ddim"
    c.sample.steps = 2
    c.sample.options = ml_collections.ConfigDict(dict(grid="uniform"))
    c.eval.bpd_examples = 0
    c.eval.settings = ml_collections.ConfigDict(dict(ddim_2=dict(sampler="ddim", steps=2)))
    if smoke:
        c.progressive.teacher_checkpoint = ""
        c.progressive.allow_random_teacher = True
        c.progressive.teacher_steps = 8
        c.progressive.rounds = 2
        c.train.num_steps = 20
    else:
        c.train.num_steps = 3000
        c.train.checkpoint_every = 1000
        c.train.eval_every = 1000
    return c
