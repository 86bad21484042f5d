"""Standalone samplers: `sampler(key, score_fn, sde, shape, *, steps, ...) -> SampleResult(x, nfe)`.

Each sampler is a pure function of explicit arguments, runs wholly on device (one `jax.jit`, a `lax` loop,
no host loop) and can be `jax.jit`-ed or `jax.vmap`-ed by the caller.
"""

from gl_jax.samplers.base import SampleResult, time_grid
from gl_jax.samplers.euler_maruyama import euler_maruyama

SAMPLERS = {
    "euler_maruyama": euler_maruyama,
}

__all__ = ["SAMPLERS", "SampleResult", "euler_maruyama", "time_grid"]
