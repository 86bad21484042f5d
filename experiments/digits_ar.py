"""An autoregressive transformer over the 64 pixels of scikit-learn's 8x8 digits, a 17-way softmax per
pixel (Vaswani et al. 2017; rotary positions, Su et al. 2021); exact bits/dim. Minutes on 2 CPU cores.

Launch:
  gl-jax --config experiments/digits_ar.py --workdir runs/digits_ar
  gl-jax --config experiments/digits_ar.py:smoke --workdir /tmp/digits_ar_smoke   # seconds

The training metric bits_per_dim is the exact NLL; eval_loss / ln 2 is the test bits/dim.
Target: well below log2(17) = 4.09 bits/dim (a uniform model); samples that look like digits.
"""

import ml_collections

from gl_jax.configs import base_config, two_step_run


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.family = "autoregressive"
    c.data.name = "sklearn_digits"
    c.data.batch_size = 64
    c.data.dequantize = False  # Either works: pixel values are recovered exactly.
    c.model = ml_collections.ConfigDict(
        dict(name="transformer", num_layers=4, d_model=64, num_heads=4, mlp_ratio=4, positions="rope")
    )
    c.ar = ml_collections.ConfigDict(dict(vocab_size=0, temperature=1.0, top_k=0))
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.min_lr_ratio = 0.05
    c.train.num_steps = 3000
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    c.train.eval_every = 1500
    c.train.ema_decay = 0.995
    c.sample.num_samples = 100
    if variant == "smoke":
        c.model.num_layers = 1
        c.model.d_model = 16
        c.model.num_heads = 2
        two_step_run(c, batch_size=16)
    elif variant:
        raise ValueError(f"Unknown variant {variant!r} of digits_ar; use '' or 'smoke'.")
    c.ar.lock()  # Unknown keys fail here, as in base_config's sections.
    return c
