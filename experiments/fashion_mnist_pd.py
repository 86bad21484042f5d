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

from gl_jax.configs import parse_variant, progressive_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    smoke = "smoke" in parse_variant(variant, "fashion_mnist_pd")
    return progressive_config(
        "fashion_mnist_ddpmpp",
        smoke=smoke,
        teacher_run="runs/fashion_mnist_ddpmpp",
        teacher_steps=64,
        rounds=4,
        num_steps=2000,
    )
