"""Loss weightings as functions of log-SNR (Kingma & Gao 2023, "Understanding diffusion objectives") on
digits: the sigmoid weighting with a v-prediction network (Kingma & Gao 2023, sec. 5; Hoogeboom et al.
2024, SiD2), or min-SNR-gamma (Hang et al. 2023) in the `min_snr` variant.

The weighting is a function w(lambda) of the noise level alone (gl_jax/losses/weightings.py), the same
objective whatever the network predicts: switching `config.loss.prediction` between "eps", "x0" and "v"
changes the network's parametrisation, not the loss being minimised (tests/losses/test_weightings.py).
Times are drawn uniformly in the process's log-SNR range and importance-weighted back to the uniform-time
objective, which lowers the loss's variance without changing it.

Launch:
  gl-jax --config experiments/digits_weighting.py --workdir runs/digits_sigmoid
  gl-jax --config experiments/digits_weighting.py:min_snr --workdir runs/digits_min_snr
  gl-jax --config experiments/digits_weighting.py:smoke --workdir /tmp/digits_weighting_smoke   # seconds

Variants: "" (sigmoid, b = 2), min_snr (gamma = 5), and either with ",smoke".
Target: digit-like samples with DDIM-50 (not yet measured against digits_vp's sigma^2 weighting).
"""

import ml_collections

from gl_jax.configs import parse_variant, student_of


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    parts = parse_variant(variant, "digits_weighting", allowed=("smoke", "min_snr"))
    smoke = "smoke" in parts
    c = student_of("digits_vp", smoke=smoke)  # digits_vp's data, network, process and run, then:
    c.loss.prediction = "v"
    c.loss.time_sampling = "log_snr"
    if "min_snr" in parts:
        c.loss.weighting = "min_snr"
        c.loss.weighting_options = ml_collections.ConfigDict(dict(gamma=5.0))
    else:
        c.loss.weighting = "sigmoid"
        c.loss.weighting_options = ml_collections.ConfigDict(dict(bias=2.0))
    c.sample.sampler = "ddim"
    c.sample.steps = 10 if smoke else 50
    c.eval.bpd_examples = 0
    steps = c.sample.steps
    c.eval.settings = ml_collections.ConfigDict({f"ddim_{steps}": dict(sampler="ddim", steps=steps)})
    return c
