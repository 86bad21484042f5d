"""Consistency distillation (Song et al. 2023, CD) of the toy_vp diffusion model on the 2-D ring of Gaussians.

The student is toy_vp's network on its VP process, read as v-prediction in EDM's sigma space with the
consistency boundary condition (the teacher read as the eps-prediction it was trained for: an eps-
parametrised student would multiply its error by sigma / alpha ~ 80 at the top level), and starts from the
teacher's parameters; each loss term compares it at sigma_{n+1} with its EMA target (mu = 0.95) one
teacher Heun step lower, on N = 18 levels (gl_jax/families/consistency.py).

Launch (train the teacher first):
  gl-jax --config experiments/toy_vp.py --workdir runs/toy_vp
  gl-jax --config experiments/toy_cd.py --workdir runs/toy_cd
  gl-jax --config experiments/toy_cd.py:smoke --workdir /tmp/toy_cd_smoke   # seconds, a random teacher

Target: one-step samples on the modes, close to the teacher's (tests/families/test_few_step.py measures
the sliced Wasserstein distance of CD with the exact score as teacher).
"""

import ml_collections

from gl_jax.configs import consistency_config, parse_variant


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    smoke = "smoke" in parse_variant(variant, "toy_cd")
    return consistency_config(
        "toy_vp", method="cd", smoke=smoke, num_steps=3000, lr=1e-4, prediction="v", teacher_run="runs/toy_vp"
    )
