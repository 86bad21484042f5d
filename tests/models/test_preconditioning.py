"""EDM preconditioning: the wrapper applies Karras et al.'s formula to any inner network."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.models import DiT, EDMPrecond, EDMUNet, UNet, build_model
from tests.models._smoke import KEY, fast_jit, random_params, smoke


class _Probe(nn.Module):
    """F(x_in, c_noise) = w x_in + c_noise with a learned scalar w, to check the wrapper's algebra."""

    @nn.compact
    def __call__(self, x, cond, y=None, *, train=False):
        w = self.param("w", nn.initializers.constant(1.5), ())
        return w * x + cond[:, None, None, None]


def test_wrapper_matches_the_closed_form():
    sigma_d = 0.5
    x = jax.random.normal(KEY, (3, 4, 4, 2))
    sigma = jnp.array([0.002, 0.7, 80.0])
    model = EDMPrecond(_Probe(), sigma_data=sigma_d)
    params = model.init(KEY, x, sigma)
    assert set(params["params"]) == {"net"}
    s = sigma[:, None, None, None]
    total = s**2 + sigma_d**2
    c_skip, c_out, c_in, c_noise = (
        sigma_d**2 / total,
        s * sigma_d / jnp.sqrt(total),
        1 / jnp.sqrt(total),
        jnp.log(s) / 4,
    )
    want = c_skip * x + c_out * (1.5 * c_in * x + c_noise)
    np.testing.assert_allclose(model.apply(params, x, sigma), want, rtol=1e-5, atol=1e-6)


def test_edm_wrapper_runs_and_differentiates():
    # Any inner network: a tiny DiT keeps this cheap (the tiny U-Nets are exercised in test_unet).
    smoke(EDMPrecond(DiT.from_variant("tiny", num_classes=4)), num_classes=4)


def test_edm_unet_is_the_unet_with_preconditioning():
    model = build_model("edm", {"variant": "edm-ncsnpp-cifar10", "sigma_data": 0.5, "num_classes": 10})
    assert isinstance(model, EDMUNet) and model.dropout == 0.13 and model.embedding == "fourier"
    # Same parameters as the generic wrapper's inner U-Net (counts: tests/models/test_unet.py).
    x, sigma = jnp.ones((1, 8, 8, 1)), jnp.ones((1,))
    tree = jax.eval_shape(EDMUNet.from_variant("tiny").init, KEY, x, sigma)
    wrapped = jax.eval_shape(EDMPrecond(UNet.from_variant("tiny")).init, KEY, x, sigma)
    assert jax.tree.structure(wrapped["params"]["net"]) == jax.tree.structure(tree["params"])


def test_tiny_edm_unet_matches_the_wrapper():
    x, sigma = jax.random.normal(KEY, (2, 8, 8, 1)), jnp.array([0.01, 20.0])
    model, wrapper = EDMUNet.from_variant("tiny"), EDMPrecond(UNet.from_variant("tiny"))
    params = random_params(model, x, sigma)

    def both(p):  # one program: XLA merges the two identical computations, so this compiles once
        return model.apply(p, x, sigma), wrapper.apply({"params": {"net": p["params"]}}, x, sigma)

    out, want = fast_jit(both)(params)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
