"""EDM preconditioning of a denoiser network (Karras et al. 2022, section 5 and table 1).

D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma), y) with, for sigma_data = 0.5,
c_skip = sigma_d^2 / (sigma^2 + sigma_d^2), c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2),
c_in = 1 / sqrt(sigma^2 + sigma_d^2) and c_noise = ln(sigma) / 4 (`gl_jax.parametrization.
edm_preconditioning`). The scalings keep the network's input and training target at unit variance at every
noise level, and c_skip lets it predict a correction rather than the clean image when the noise is small.

Two forms: `EDMPrecond(net)` wraps any network F (its parameters live under "net"); `EDMUNet` is the U-Net
with the preconditioning built in (the parameters are exactly the U-Net's, and the U-Net's fields, table
of sizes and `from_variant` apply), which is what a config names as model "edm".
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gl_jax.models.unet import UNet
from gl_jax.parametrization import edm_preconditioning
from gl_jax.sde import broadcast_to_data

__all__ = ["EDMPrecond", "EDMUNet", "edm_denoiser"]


def edm_denoiser(
    net: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, sigma: jax.Array, *, sigma_data: float
) -> jax.Array:
    """D(x; sigma) = c_skip x + c_out net(c_in x, c_noise), EDM's denoiser around a raw network.

    Args:
      net: the raw network F, called as `net(x_in, c_noise)` with x_in shaped like x and c_noise `[B]`.
      x: `[B, ...]` noisy data x_0 + sigma eps.
      sigma: `[B]` noise levels.
      sigma_data: standard deviation of the data.

    Returns:
      The denoised estimate of x_0, float32, shaped like x.
    """
    sigma = sigma.astype(jnp.float32)  # [B]
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data=sigma_data)  # [B] each
    f = net(broadcast_to_data(c_in, x) * x, c_noise)  # [B, ...]
    return broadcast_to_data(c_skip, x) * x + broadcast_to_data(c_out, x) * f.astype(jnp.float32)


class _Preconditioned(nn.Module):
    """`__call__(x, sigma, y=None, *, train=False) -> D(x; sigma)` around the raw network `_network`.

    x is `[B, H, W, C]` noisy data x_0 + sigma eps (alpha = 1), sigma is `[B]`; D, the denoised estimate of
    x_0, is shaped like x. Subclasses declare the field `sigma_data` (after their own required fields, so
    `EDMPrecond(net)` stays positional) and define `_network`.
    """

    def _network(self, x_in: jax.Array, c_noise: jax.Array, y: jax.Array | None, train: bool) -> jax.Array:
        """F(x_in; c_noise, y): the raw network's output `[B, H, W, C]`."""
        raise NotImplementedError

    @nn.compact
    def __call__(
        self, x: jax.Array, sigma: jax.Array, y: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        raw = lambda x_in, c_noise: self._network(x_in, c_noise, y, train)
        return edm_denoiser(raw, x, sigma, sigma_data=self.sigma_data)


class EDMPrecond(_Preconditioned):
    """Any network F behind EDM's preconditioning: `apply(params, x, sigma, y=None, *, train=False) -> D`.

    x is `[B, H, W, C]` noisy data x_0 + sigma eps (alpha = 1), sigma is `[B]`; D, the denoised estimate of
    x_0, is shaped like x.

    Attributes:
      net: the raw network, called as `net(x_in, c_noise, y, train=train)` (e.g. a `DiT`).
      sigma_data: standard deviation of the data (0.5 for images scaled to [-1, 1]).
    """

    net: nn.Module
    sigma_data: float = 0.5

    def _network(self, x_in: jax.Array, c_noise: jax.Array, y: jax.Array | None, train: bool) -> jax.Array:
        return self.net(x_in, c_noise, y, train=train)


class EDMUNet(_Preconditioned, UNet):
    """EDM's preconditioned U-Net: `apply(params, x, sigma, y=None, *, train=False) -> D(x; sigma)`.

    The `UNet` (all its fields and `VARIANTS`, e.g. "edm-ddpmpp-cifar10", "edm-ncsnpp-cifar10") is F and
    receives c_noise = ln(sigma) / 4 as its conditioning.

    Attributes (in addition to `UNet`'s):
      sigma_data: standard deviation of the data (0.5 for images scaled to [-1, 1]).
    """

    sigma_data: float = 0.5

    def _network(self, x_in: jax.Array, c_noise: jax.Array, y: jax.Array | None, train: bool) -> jax.Array:
        return self._unet(x_in, c_noise, y, train)
