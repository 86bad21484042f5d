"""An autoregressive transformer over the 784 pixels of Fashion-MNIST, a 256-way softmax per pixel
(PixelRNN's output, van den Oord et al. 2016; Vaswani et al. 2017; rotary positions, Su et al. 2021).

Launch:
  gl-jax --config experiments/fashion_mnist_ar.py --workdir runs/fashion_mnist_ar
  gl-jax --config experiments/fashion_mnist_ar.py:smoke --workdir /tmp/fmnist_ar_smoke   # seconds

Needs `apt-get install dataset-fashion-mnist`. Exact bits/dim: training metric bits_per_dim, and
eval_loss / ln 2 on the test split. Sampling is 784 sequential steps (with the key/value cache).
Target: well below 8 bits/dim (uniform); a CPU run of the default takes hours.
"""

import ml_collections

from gl_jax.configs import base_config, two_step_run


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.family = "autoregressive"
    c.data.name = "fashion_mnist"
    c.data.batch_size = 32
    c.data.dequantize = False
    c.model = ml_collections.ConfigDict(
        dict(name="transformer", num_layers=4, d_model=128, num_heads=4, mlp_ratio=4, positions="rope")
    )
    c.ar = ml_collections.ConfigDict(dict(vocab_size=0, temperature=1.0, top_k=0))
    c.optim.lr = 5e-4
    c.optim.warmup_steps = 500
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 20_000
    c.train.steps_per_call = 10
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    c.train.eval_every = 5000
    c.train.ema_decay = 0.999
    c.sample.num_samples = 16
    if variant == "smoke":
        c.model.num_layers = 1
        c.model.d_model = 16
        c.model.num_heads = 2
        two_step_run(c, batch_size=4, num_samples=2)
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of fashion_mnist_ar; use '' or 'smoke'.")
    c.ar.lock()  # Unknown keys fail here, as in base_config's sections.
    return c
