"""Class-conditional DDPM++ (small) on Fashion-MNIST with classifier-free guidance: synthetic garments of
chosen classes, scored by their usefulness (CAS, augmentation) in `--mode eval`.

Launch:
  gl-jax --config experiments/fashion_mnist_vp_cond.py --workdir runs/fashion_mnist_vp_cond
  gl-jax --config experiments/fashion_mnist_vp_cond.py:smoke --workdir /tmp/fmnist_cond_smoke  # seconds
  gl-jax --config experiments/fashion_mnist_vp_cond.py --workdir runs/fashion_mnist_vp_cond --mode eval

The network and process are `fashion_mnist_ddpmpp.py`'s (DDPM++ at 1.26M parameters, VP SDE, eps
prediction, 999 t embedded), with a learned label embedding added to the noise embedding and label dropout
0.1 (Ho & Salimans 2022), so one network gives the conditional and the unconditional score; sampling
extrapolates between them with weight `config.sample.guidance` (1: the plain conditional score), with
DPM-Solver++(2M) at 20 steps and the denoised estimate clipped to [-1, 1]. Needs
`apt-get install dataset-fashion-mnist`.

Target: a Classification Accuracy Score (Ravuri & Vinyals 2019) approaching the real-data classifier's,
and samples that help a classifier that has only 1 % of the real training split; the numbers reached are
in the README (`benchmarks/usefulness.py`). About two hours on 2 CPU cores, minutes on a GPU.
"""

import ml_collections

from gl_jax.configs import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "fashion_mnist"
    c.data.batch_size = 64
    c.data.dequantize = True
    c.model = ml_collections.ConfigDict(
        dict(name="unet", variant="ddpmpp-small", dropout=0.0, num_classes=10, label_dropout=0.1)
    )
    c.sde = ml_collections.ConfigDict(dict(name="vp", beta_min=0.1, beta_max=20.0))
    c.loss.noise_cond = "999t"
    c.loss.prediction = "eps"
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 200
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 6000
    c.train.log_every = 50
    c.train.checkpoint_every = 250
    c.train.eval_every = 1000
    c.train.ema_decay = 0.999
    c.train.ema_warmup = True  # Short CPU runs: see fashion_mnist_ddpmpp.py.
    c.sample.sampler = "dpm_solver_pp"
    c.sample.steps = 20
    c.sample.threshold = "static"
    c.sample.guidance = 2.0
    c.sample.num_samples = 100
    # --mode eval: 10k samples per setting and 10k class-balanced samples for the usefulness entry.
    c.eval.num_samples = 10_000
    c.eval.batch_size = 250
    c.eval.bpd_examples = 1000
    c.eval.settings = ml_collections.ConfigDict(
        dict(
            dpm_solver_pp_2m_20=dict(sampler="dpm_solver_pp", steps=20),
            unipc_3_10=dict(sampler="unipc", steps=10, options=dict(order=3)),
        )
    )
    if variant == "smoke":
        c.model.variant = "tiny"
        c.model.attention_resolutions = ()
        c.data.batch_size = 8
        c.train.num_steps = 2
        c.train.log_every = 1
        c.train.checkpoint_every = 2
        c.train.eval_every = 0
        c.sample.steps = 4
        c.sample.num_samples = 10
        c.eval.num_samples = 20
        c.eval.batch_size = 10
        c.eval.grid_size = 10
        c.eval.kid_subsets = 10
        c.eval.bpd_examples = 4
        c.eval.bpd_rtol = 1e-3
        c.eval.bpd_atol = 1e-3
        c.stats.max_images = 16
        c.eval.settings = ml_collections.ConfigDict(
            dict(dpm_solver_pp_4=dict(sampler="dpm_solver_pp", steps=4))
        )
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of fashion_mnist_vp_cond; use '' or 'smoke'.")
    return c
