"""Progressive distillation (Salimans & Ho 2022) of the digits_vp diffusion model on scikit-learn's 8x8
digits: 32 DDIM steps of the teacher halved 4 times to a 2-step student, in one run.

The student is digits_vp's network, starting from its parameters, read as v-prediction (the teacher's
round is read as the eps-prediction it was trained for); every 1,000 updates the student replaces the
teacher and the steps halve (gl_jax/families/progressive.py).

Launch (train the teacher first):
  gl-jax --config experiments/digits_vp.py --workdir runs/digits_vp
  gl-jax --config experiments/digits_pd.py --workdir runs/digits_pd
  gl-jax --config experiments/digits_pd.py:smoke --workdir /tmp/digits_pd_smoke  # seconds

Target: the 2-step student's FID near the teacher's 32-step DDIM FID (not yet measured on this data;
tests/families/test_few_step.py measures the match with the exact score as teacher).
"""

import ml_collections

from gl_jax.configs import parse_variant, progressive_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    smoke = "smoke" in parse_variant(variant, "digits_pd")
    return progressive_config(
        "digits_vp", smoke=smoke, teacher_run="runs/digits_vp", teacher_steps=32, rounds=4, num_steps=4000
    )
