"""Progressive distillation (Salimans & Ho 2022) of the fashion_mnist_ddpmpp diffusion model on Fashion-
MNIST: 64 DDIM steps of the teacher halved 4 times to a 4-step student, in one run.

The student is fashion_mnist_ddpmpp's network, starting from its parameters, read as v-prediction (the
teacher's round is read as the eps-prediction it was trained for); every 500 updates the student replaces
the teacher and the steps halve (gl_jax/families/progressive.py).

Launch (train the teacher first):
  gl-jax --config experiments/fashion_mnist_ddpmpp.py --workdir runs/fashion_mnist_ddpmpp
  gl-jax --config experiments/fashion_mnist_pd.py --workdir runs/fashion_mnist_pd
  gl-jax --config experiments/fashion_mnist_pd.py:smoke --workdir /tmp/fashion_mnist_pd_smoke  # seconds

Target: the 4-step student's FID near the teacher's 64-step DDIM FID (not yet measured on this data;
tests/families/test_few_step.py measures the match with the exact score as teacher).
"""

import ml_collections

from gl_jax.configs import parse_variant, student_of


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    smoke = "smoke" in parse_variant(variant, "fashion_mnist_pd")
    c = student_of("fashion_mnist_ddpmpp", smoke=smoke)
    c.family = "progressive"
    c.loss.prediction = "v"
    c.progressive = ml_collections.ConfigDict(
        dict(
            teacher_checkpoint="runs/fashion_mnist_ddpmpp",
            teacher_prediction="eps",
            teacher_steps=64,
            rounds=4,
        )
    )
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.train.ema_decay = 0.99
    c.sample.sampler = "ddim"
    c.sample.steps = 4
    c.sample.options = ml_collections.ConfigDict(dict(grid="uniform"))
    c.eval.bpd_examples = 0
    c.eval.settings = ml_collections.ConfigDict(dict(ddim_4=dict(sampler="ddim", steps=4)))
    if smoke:
        c.progressive.teacher_checkpoint = ""
        c.progressive.allow_random_teacher = True
        c.progressive.teacher_steps = 8
        c.progressive.rounds = 2
        c.sample.steps = 2
        c.eval.settings = ml_collections.ConfigDict(dict(ddim_2=dict(sampler="ddim", steps=2)))
        c.train.num_steps = 20
    else:
        c.train.num_steps = 2000
        c.train.checkpoint_every = 500
        c.train.eval_every = 500
    return c
