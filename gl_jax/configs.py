"""The base experiment config that every file in `experiments/` starts from.

Sections other than `model` and `sde` are locked: setting a key that does not exist (in a config file or
with `--config.a.b=value`) fails with the nearest valid key. `model` and `sde` are replaced whole by each
experiment and checked at the boundary, where they become typed objects (`build_model`, `build_sde`).
"""

from __future__ import annotations

import ml_collections

__all__ = ["base_config"]


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by all experiments (score_sde's CIFAR-10 optimiser settings where they apply)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.family = "score"

    c.data = ml_collections.ConfigDict()
    c.data.name = "sklearn_digits"
    c.data.data_dir = ""  # "" means $TFDS_DATA_DIR, else ~/tensorflow_datasets.
    c.data.batch_size = 128  # Global batch, split over processes and devices.
    c.data.flip = False
    c.data.dequantize = False
    c.data.eval_split = "test"
    # The global batch is one batch of each of this many disjoint shards of the train split, process p
    # reading its consecutive share of them; 0 means one per process. Fix it (to a multiple of every
    # process count you use) and the run is the same on 1 or several processes.
    c.data.num_shards = 0

    c.model = ml_collections.ConfigDict({"name": "small_unet"})
    c.sde = ml_collections.ConfigDict({"name": "vp", "beta_min": 0.1, "beta_max": 20.0})

    c.loss = ml_collections.ConfigDict()
    c.loss.weighting = "sigma2"  # "sigma2", "likelihood" or "edm".
    c.loss.time_sampling = "uniform"  # "uniform", "discrete", "log_snr" or "edm".
    c.loss.reduce = "mean"
    c.loss.prediction = "eps"  # What the network predicts: "eps", "x0", "v" or "score".
    c.loss.noise_cond = "t"  # The network's conditioning input: "t", "999t", "log_sigma" or "sigma".

    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adam"
    c.optim.lr = 2e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.optim.min_lr_ratio = 0.0
    c.optim.grad_clip = 1.0
    c.optim.grad_accum_steps = 1  # Micro-batches per step: same update, 1/k of the activation memory.

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.steps_per_call = 1  # Fuse k steps into one compiled call (lax.scan).
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.eval_every = 500  # Sample grid every this many steps (0: only at the end).
    c.train.max_to_keep = 3
    c.train.ema_decay = 0.999
    c.train.on_nonfinite = "stop"  # "stop": stop with the step named; "skip": skip the update, go on.
    c.train.compute_dtype = "float32"  # "bfloat16": bf16 forward/backward, fp32 weights, loss, gradients.
    c.train.remat = "none"  # jax.checkpoint of the loss: "none", "full" (recompute all) or "dots".

    c.sample = ml_collections.ConfigDict()
    c.sample.sampler = "euler_maruyama"
    c.sample.steps = 500
    c.sample.num_samples = 64
    c.sample.use_ema = True
    c.sample.guidance = 1.0  # Classifier-free guidance weight for class-conditional models (1: none).
    # Keyword options of the sampler, e.g. {"predictor": "reverse_diffusion", "snr": 0.16} for "pc";
    # an experiment replaces the whole dict.
    c.sample.options = ml_collections.ConfigDict()

    # Multi-process jobs (see gl_jax/train/distributed.py); off: one process uses its local devices.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.enabled = False
    c.distributed.coordinator_address = ""  # "host:port" of process 0; "" = $JAX_COORDINATOR_ADDRESS or
    # the cluster's (SLURM, Open MPI, TPU).
    c.distributed.num_processes = 0  # 0: from the cluster.
    c.distributed.process_id = -1  # -1: from the cluster.
    c.distributed.cpu_collectives = "gloo"  # How CPU devices of different processes talk: "gloo" or "mpi".
    c.distributed.initialization_timeout = 300  # Seconds to wait for every process to join.

    for name in ("data", "loss", "optim", "train", "sample", "distributed"):
        c[name].lock()
    return c
