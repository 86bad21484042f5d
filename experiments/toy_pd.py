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

from gl_jax.configs import parse_variant, progressive_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    smoke = "smoke" in parse_variant(variant, "toy_pd")
    return progressive_config(
        "toy_vp", smoke=smoke, teacher_run="runs/toy_vp", teacher_steps=16, rounds=3, num_steps=3000
    )
