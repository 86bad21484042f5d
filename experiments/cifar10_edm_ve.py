r"""EDM's CIFAR-10 config F, NCSN++ network (Karras et al. 2022, table 2).

Target: FID 1.98 at 35 NFE; FID on 50k samples against the training set, minimum of 3 seeds.

Launch (CIFAR-10 prepared as array_record in a TFDS data_dir, see README; smoke needs no dataset):
  gl-jax --config experiments/cifar10_edm_ve.py --workdir WORKDIR \
    --config.data.data_dir=TFDS_DATA_DIR
  gl-jax --config experiments/cifar10_edm_ve.py:smoke --workdir /tmp/smoke  # seconds

Hyper-parameters: `gl_jax.published_configs.edm_cifar10`.
"""

import ml_collections

from gl_jax.published_configs import edm_cifar10


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return edm_cifar10("ve", conditional=False, variant=variant)
