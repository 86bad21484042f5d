"""VDM's learned noise schedule network, for `gl_jax.sde.LearnedSchedule`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["MonotoneGamma"]


class MonotoneGamma(nn.Module):
    """VDM's learned noise schedule gamma(t) = -log SNR(t), monotone increasing in t (Kingma et al. 2021,
    appendix H): a positive-weight linear term plus a positive-weight sigmoid MLP, rescaled so that
    gamma(0) = gamma_min and gamma(1) = gamma_max exactly.

    Attributes:
      gamma_min, gamma_max: end points (VDM's CIFAR-10: -13.3 and 5.0).
      hidden: width of the sigmoid layer (VDM: 1024).
    """

    gamma_min: float = -13.3
    gamma_max: float = 5.0
    hidden: int = 1024

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        """gamma(t) `[B]` for times t `[B]` in [0, 1]."""
        init = nn.initializers.normal(1.0)
        w1, b1 = self.param("l1_kernel", init, (1, 1)), self.param("l1_bias", nn.initializers.zeros, (1,))
        w2, b2 = self.param("l2_kernel", init, (1, self.hidden)), self.param("l2_bias", init, (self.hidden,))
        w3 = self.param("l3_kernel", init, (self.hidden, 1))

        def raw(t):
            # Absolute-value kernels make every path from t to the output increasing.
            t = t[:, None]  # [B, 1]
            h = t @ jnp.abs(w1) + b1
            u = 2.0 * (jax.nn.sigmoid(2.0 * (t - 0.5) @ jnp.abs(w2) + b2) - 0.5)  # [B, hidden]
            return (h + u @ jnp.abs(w3) / self.hidden)[:, 0]  # [B]

        g0, g1 = raw(jnp.zeros((1,))), raw(jnp.ones((1,)))
        return self.gamma_min + (self.gamma_max - self.gamma_min) * (raw(t) - g0) / (g1 - g0)
