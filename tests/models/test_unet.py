"""The DDPM / DDPM++ / NCSN++ U-Net: published parameter counts, wiring of every option, tiny smoke steps,
class conditioning with label dropout, and building from a config."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.models import UNet, build_model
from gl_jax.models.unet import VARIANTS
from tests.models._smoke import KEY, fast_jit, num_params, random_params, smoke

# Exact counts of our networks on 32x32x3 (28x28x1 for ddpmpp-small), and the published figure each
# rounds to where one exists:
#   ddpm-cifar10: Ho et al. 2020 report 35.7M; 35,746,307 is the count of the same network built with
#     diffusers' UNet2DModel (channels 128, multipliers 1-2-2-2, 2 blocks, attention at 16x16).
#   ddpmpp-cifar10 (score_sde "DDPM++ cont.", VP): 61.80M and edm-ddpmpp-cifar10: 55.73M, the model
#     capacities (Mparams) in Karras et al. 2022, table 7 (CIFAR-10 VP, "baseline" and "ours").
#   The other sizes have no published count that we could check; their values pin the architecture. (EDM's
#   NCSN++ holds its 128 Fourier frequencies in a buffer, so its own count is 128 lower.)
PUBLISHED_M = {"ddpm-cifar10": 35.7, "ddpmpp-cifar10": 61.80, "edm-ddpmpp-cifar10": 55.73}
COUNTS = {
    "ddpm-cifar10": 35_746_307,
    "ddpmpp-cifar10": 61_804_419,
    "ddpmpp-deep-cifar10": 106_632_579,
    "ncsnpp-cifar10": 62_758_915,
    "ncsnpp-deep-cifar10": 107_587_075,
    "edm-ddpmpp-cifar10": 55_732_739,
    "edm-ncsnpp-cifar10": 56_395_651,
    "ddpmpp-small": 1_259_393,
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts(name):
    shape = (1, 28, 28, 1) if name == "ddpmpp-small" else (1, 32, 32, 3)
    count = num_params(UNet.from_variant(name), shape)
    assert count == COUNTS[name]
    if name in PUBLISHED_M:
        digits = 1 if name == "ddpm-cifar10" else 2
        assert round(count / 1e6, digits) == PUBLISHED_M[name]


def test_score_sde_ddpm_attends_once_per_up_level():
    # score_sde's re-implementation of DDPM attends once per resolution on the way up; Ho et al.'s attend
    # after each of the three blocks (two attention blocks of 263,680 parameters more).
    once = num_params(UNet.from_variant("ddpm-cifar10", attn_every_up_block=False), (1, 32, 32, 3))
    assert COUNTS["ddpm-cifar10"] - once == 2 * (2 * 256 + 4 * (256 * 256 + 256))


def test_variant_table_uses_only_unet_fields():
    fields = {f.name for f in dataclasses.fields(UNet)}
    for name, entry in VARIANTS.items():
        assert set(entry) <= fields, name


@pytest.mark.parametrize(
    "progressive_input, progressive, combine, fir",
    [
        (i, o, "sum", True)
        for i, o in itertools.product(["input_skip", "residual"], ["output_skip", "residual"])
    ]
    + [("input_skip", "none", "cat", True), ("residual", "residual", "sum", False)],
)
def test_progressive_branches_keep_the_output_shape(progressive_input, progressive, combine, fir):
    model = UNet.from_variant(
        "tiny-ncsnpp",
        fir=fir,
        progressive_input=progressive_input,
        progressive=progressive,
        progressive_combine=combine,
    )
    x, cond = jnp.ones((2, 8, 8, 3)), jnp.ones((2,))
    out, _ = jax.eval_shape(lambda: model.init_with_output(KEY, x, cond))
    assert out.shape == x.shape and out.dtype == jnp.float32


def test_bfloat16_compute_with_float32_params():
    model = UNet.from_variant("tiny-ncsnpp", dtype=jnp.bfloat16)
    x, cond = jnp.ones((2, 8, 8, 3)), jnp.ones((2,))
    out, params = jax.eval_shape(lambda: model.init_with_output(KEY, x, cond))
    assert out.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}


def test_tiny_ddpm_style_runs_and_differentiates():
    smoke(UNet.from_variant("tiny"))


def test_tiny_ncsnpp_style_runs_and_differentiates():
    # BigGAN blocks, Fourier embedding, FIR resampling, residual input and output-skip pyramids.
    smoke(UNet.from_variant("tiny-ncsnpp"))


def test_label_dropout_replaces_given_labels_by_the_null_label():
    # One resolution, no attention: the label path is all this checks, and compiling stays cheap.
    model = UNet(
        channels=8,
        channel_mults=(1,),
        num_res_blocks=1,
        attention_resolutions=(),
        dropout=0.0,
        num_classes=3,
        label_dropout=1.0,
    )
    x, cond, y = jax.random.normal(KEY, (2, 8, 8, 1)), jnp.array([0.3, 2.0]), jnp.array([0, 2])
    # Random parameters of the right shapes (no init to compile): the initial near-zero output layers
    # would hide the labels' effect.
    params = random_params(model, x, cond, y)
    apply = fast_jit(model.apply, static_argnames="train")
    rngs = {"dropout": jax.random.key(4, impl="rbg")}
    no_label = jnp.full((2,), 3)  # y = num_classes is the unconditional ("null") label
    null = apply(params, x, cond, no_label)
    dropped = apply(params, x, cond, y, train=True, rngs=rngs)
    np.testing.assert_allclose(dropped, null, rtol=1e-5, atol=1e-6)
    assert not np.allclose(apply(params, x, cond, y), null)  # labels matter, and are kept at evaluation
    # With no label there is nothing to drop: training and evaluation agree.
    np.testing.assert_allclose(
        apply(params, x, cond, no_label, train=True, rngs=rngs), null, rtol=1e-5, atol=1e-6
    )


def test_build_model_expands_variants_and_rejects_unknown_keys():
    model = build_model("unet", {"variant": "ddpm-cifar10", "dropout": 0.2, "channel_mults": [1, 2]})
    assert isinstance(model, UNet)
    assert model.num_res_blocks == 2 and model.attn_every_up_block and model.dropout == 0.2
    assert model.channel_mults == (1, 2)
    with pytest.raises(ValueError, match="did you mean 'config.model.dropout'"):
        build_model("unet", {"variant": "ddpm-cifar10", "dropuot": 0.2})
    with pytest.raises(ValueError, match="Did you mean 'ddpmpp-cifar10'"):
        build_model("unet", {"variant": "ddpmpp-cifar"})


def test_bad_inputs_are_named():
    model = UNet.from_variant("tiny")
    with pytest.raises(ValueError, match="not divisible by 2"):
        jax.eval_shape(model.init, KEY, jnp.ones((1, 7, 7, 1)), jnp.ones((1,)))
    with pytest.raises(ValueError, match="unconditional"):
        jax.eval_shape(model.init, KEY, jnp.ones((1, 8, 8, 1)), jnp.ones((1,)), jnp.zeros((1,), int))
    with pytest.raises(ValueError, match="progressive"):
        jax.eval_shape(UNet(progressive="skip").init, KEY, jnp.ones((1, 8, 8, 1)), jnp.ones((1,)))
