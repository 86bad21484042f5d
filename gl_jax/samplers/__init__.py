"""Standalone samplers: `sampler(key, score_fn, sde, shape, *, steps, ...) -> SampleResult(x, nfe)`.

Each sampler is a pure function of explicit arguments, runs wholly on device (one `jax.jit`, a `lax` loop,
no host loop) and can be `jax.jit`-ed or `jax.vmap`-ed by the caller. The arguments every sampler takes
(`key, score_fn, sde, shape, steps, x_init, t_start, grid, rho`) are described in `gl_jax.samplers.base`.
"""

from gl_jax.registry import Registry
from gl_jax.samplers.base import TIME_GRIDS, SampleResult, time_grid
from gl_jax.samplers.conditional import classifier_guided_score, colorize, guided_score, inpaint
from gl_jax.samplers.consistency import consistency_sampler
from gl_jax.samplers.ddim import ddim
from gl_jax.samplers.dpm_solver import dpm_solver, dpm_solver_pp
from gl_jax.samplers.dpm_solver_multistep import dpm_solver_multistep
from gl_jax.samplers.edit import EditResult, counterfactual
from gl_jax.samplers.edm import edm_sampler
from gl_jax.samplers.euler_maruyama import euler_maruyama
from gl_jax.samplers.guidance import GuidedScore, autoguided_score, evaluation_times, interval_guided_score
from gl_jax.samplers.invert import InversionResult, invert, sample_from_latent
from gl_jax.samplers.ipndm import ipndm
from gl_jax.samplers.ode import ode_sampler
from gl_jax.samplers.pc import pc_sampler
from gl_jax.samplers.thresholding import THRESHOLDS, threshold_x0, thresholded_score
from gl_jax.samplers.time_steps import fit_time_steps
from gl_jax.samplers.unipc import unipc
from gl_jax.samplers.watermark import TreeRing, detect, tree_ring_key, watermark_noise

# Names a config may use for `config.sample.sampler`; `SAMPLERS.options(name)` lists the keyword options
# `config.sample.options` may set (`steps` has its own key; `x_init` is not a config's to give).
SAMPLERS = Registry(
    "sampler",
    {
        "euler_maruyama": euler_maruyama,
        "pc": pc_sampler,
        "ddim": ddim,
        "edm": edm_sampler,
        "ode": ode_sampler,
        "dpm_solver": dpm_solver,
        "dpm_solver_pp": dpm_solver_pp,
        "dpm_solver_multistep": dpm_solver_multistep,
        "unipc": unipc,
        "ipndm": ipndm,
        "consistency": consistency_sampler,
    },
    skip=("steps", "x_init"),
)

__all__ = [
    "EditResult",
    "GuidedScore",
    "InversionResult",
    "SAMPLERS",
    "SampleResult",
    "THRESHOLDS",
    "TIME_GRIDS",
    "TreeRing",
    "autoguided_score",
    "classifier_guided_score",
    "colorize",
    "consistency_sampler",
    "counterfactual",
    "ddim",
    "detect",
    "dpm_solver",
    "dpm_solver_multistep",
    "dpm_solver_pp",
    "edm_sampler",
    "euler_maruyama",
    "evaluation_times",
    "fit_time_steps",
    "guided_score",
    "inpaint",
    "interval_guided_score",
    "invert",
    "ipndm",
    "ode_sampler",
    "pc_sampler",
    "sample_from_latent",
    "threshold_x0",
    "thresholded_score",
    "time_grid",
    "tree_ring_key",
    "unipc",
    "watermark_noise",
]
