"""Consistency distillation (Song et al. 2023, CD) of the fashion_mnist_ddpmpp diffusion model on Fashion-
MNIST.

The student is fashion_mnist_ddpmpp's network on its VP process, read as v-prediction in EDM's sigma space
with the consistency boundary condition (the teacher read as the eps-prediction it was trained for: an
eps-parametrised student would multiply its error by sigma / alpha ~ 80 at the top level), and starts from
the teacher's parameters; each loss term compares it at sigma_{n+1} with its EMA target (mu = 0.95) one
teacher Heun step lower, on N = 18 levels (gl_jax/families/consistency.py).

Launch (train the teacher first):
  gl-jax --config experiments/fashion_mnist_ddpmpp.py --workdir runs/fashion_mnist_ddpmpp
  gl-jax --config experiments/fashion_mnist_cd.py --workdir runs/fashion_mnist_cd
  gl-jax --config experiments/fashion_mnist_cd.py:smoke --workdir /tmp/fashion_mnist_cd_smoke  # seconds

Target: FID at 1, 2 and 4 steps (the `cm_*` eval settings) close to the teacher's at 10-35 NFE (not yet
measured on this data; tests/families/test_few_step.py measures CD with an exact teacher).
"""

import ml_collections

from gl_jax.configs import consistency_config, parse_variant


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    smoke = "smoke" in parse_variant(variant, "fashion_mnist_cd")
    return consistency_config(
        "fashion_mnist_ddpmpp",
        method="cd",
        smoke=smoke,
        num_steps=2000,
        lr=1e-4,
        prediction="v",
        teacher_run="runs/fashion_mnist_ddpmpp",
    )
