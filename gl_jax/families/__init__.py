"""Model families: each binds a model, its loss, a sampler and its evaluation behind one small interface.

A family has `init(key) -> params`, `loss(params, batch, keys) -> (loss, metrics)`, and
`sample(params, key, num) -> samples`; the trainer knows nothing else about it.
"""

from gl_jax.families.base import Family, build_family
from gl_jax.families.diffusion import ScoreDiffusion

__all__ = ["Family", "ScoreDiffusion", "build_family"]
