r"""score_sde's CIFAR-10 `vp/ddpmpp_deep_continuous` (Song et al. 2021, table 3).

Targets: FID 2.41 (PC sampler), FID 3.08 (probability-flow ODE), NLL 3.13 bits/dim;
FID on 50k samples against the training set.

Launch (CIFAR-10 prepared as array_record in a TFDS data_dir, see README; smoke needs no dataset):
  gl-jax --config experiments/cifar10_vp_ddpmpp_deep_continuous.py --workdir WORKDIR \
    --config.data.data_dir=TFDS_DATA_DIR
  gl-jax --config experiments/cifar10_vp_ddpmpp_deep_continuous.py:smoke --workdir /tmp/smoke  # seconds

Hyper-parameters and the differences from score_sde: `gl_jax.published_configs.score_sde_cifar10`.
"""

import ml_collections

from gl_jax.published_configs import score_sde_cifar10


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return score_sde_cifar10("vp/ddpmpp_deep_continuous", variant)
