"""U-Net building blocks: FIR resampling, the fused resampling convolutions, attention and embeddings."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.models.embeddings import GaussianFourierEmbedding, LabelEmbedding, sinusoidal_embedding
from gl_jax.models.layers import LECUN_ZERO_OUT, AttnBlock, check_resolutions, ddpm_init, group_norm
from gl_jax.models.resample import (
    Downsample,
    ResampleConv,
    Upsample,
    fir_downsample_2d,
    fir_upsample_2d,
    naive_downsample_2d,
    naive_upsample_2d,
)
from gl_jax.models.resblocks import ResBlockBigGAN, ResBlockDDPM
from tests.models._smoke import KEY, fast_jit, random_params


def _interior(x: jax.Array) -> jax.Array:
    """Drops the outermost row and column on each side (where FIR resampling sees zero padding)."""
    return x[:, 1:-1, 1:-1, :]


def test_fir_resampling_shapes():
    x = jax.random.normal(KEY, (2, 8, 6, 3))
    assert fir_upsample_2d(x).shape == (2, 16, 12, 3)
    assert fir_downsample_2d(x).shape == (2, 4, 3, 3)
    assert naive_upsample_2d(x).shape == (2, 16, 12, 3)
    assert naive_downsample_2d(x).shape == (2, 4, 3, 3)


def test_fir_resampling_of_a_constant_is_the_constant_away_from_the_border():
    x = jnp.full((1, 8, 8, 2), 1.7)
    np.testing.assert_allclose(_interior(fir_downsample_2d(x)), 1.7, rtol=1e-6)
    np.testing.assert_allclose(_interior(fir_upsample_2d(x)), 1.7, rtol=1e-6)
    np.testing.assert_allclose(_interior(fir_downsample_2d(fir_upsample_2d(x))), 1.7, rtol=1e-6)
    # The border sees the zero padding of the published implementation: 1/8 of the 1-D kernel [1, 3, 3, 1]
    # falls outside, so an edge (not corner) pixel of the downsampled constant is 7/8 of it.
    np.testing.assert_allclose(fir_downsample_2d(x)[0, 0, 1, 0], 1.7 * 7 / 8, rtol=1e-6)


def test_naive_resampling_is_exact():
    x = jax.random.normal(KEY, (2, 4, 4, 3))
    np.testing.assert_array_equal(naive_downsample_2d(naive_upsample_2d(x)), x)
    np.testing.assert_array_equal(naive_downsample_2d(jnp.full((1, 4, 4, 1), 2.5)), 2.5)


@pytest.mark.parametrize("up", [True, False], ids=["up", "down"])
def test_fused_resample_conv_with_a_delta_kernel_is_plain_fir_resampling(up):
    # A 3x3 kernel that is the identity at its centre reduces the fused (transposed) convolution to pure
    # zero-stuffing / decimation, so the fused path must equal the unfused FIR resampling everywhere,
    # borders included: this pins down the padding arithmetic of both paths.
    x = jax.random.normal(KEY, (2, 8, 8, 3))
    delta = jnp.zeros((3, 3, 3, 3)).at[1, 1].set(jnp.eye(3))
    params = {"params": {"kernel": delta, "bias": jnp.zeros(3)}}
    want = fir_upsample_2d(x) if up else fir_downsample_2d(x)
    np.testing.assert_allclose(fast_jit(ResampleConv(3, up=up).apply)(params, x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fir", [False, True], ids=["naive", "fir"])
@pytest.mark.parametrize("with_conv", [False, True], ids=["filter", "conv"])
def test_up_and_down_sample_shapes(fir, with_conv):
    x = jnp.ones((2, 8, 8, 4))
    up, down = Upsample(6, with_conv=with_conv, fir=fir), Downsample(6, with_conv=with_conv, fir=fir)
    channels = 6 if with_conv else 4
    out_up, _ = up.init_with_output(KEY, x)
    out_down, _ = down.init_with_output(KEY, x)
    assert out_up.shape == (2, 16, 16, channels)
    assert out_down.shape == (2, 4, 4, channels)


def test_attention_is_equivariant_to_pixel_permutations():
    # No positional information: permuting the pixels permutes the output the same way.
    x = jax.random.normal(KEY, (2, 4, 4, 8))
    block = AttnBlock()
    params = random_params(block, x, scale=0.3)  # a non-trivial output projection
    perm = np.random.default_rng(1).permutation(16)

    def permute(a):
        return a.reshape(2, 16, 8)[:, perm].reshape(2, 4, 4, 8)

    apply = fast_jit(block.apply)
    np.testing.assert_allclose(apply(params, permute(x)), permute(apply(params, x)), atol=1e-5)


@pytest.mark.parametrize(
    "block, scale",
    [
        (AttnBlock(), 1.0),
        (AttnBlock(skip_rescale=True), 1 / math.sqrt(2)),
        (ResBlockDDPM(), 1.0),
        (ResBlockBigGAN(), 1 / math.sqrt(2)),
        (AttnBlock(initializers=LECUN_ZERO_OUT), 1.0),
        (ResBlockDDPM(initializers=LECUN_ZERO_OUT), 1.0),
    ],
    ids=["attn", "attn-rescaled", "ddpm", "biggan", "attn-lecun", "ddpm-lecun"],
)
def test_blocks_start_as_the_identity(block, scale):
    # The last layer of every residual branch is initialised at (1e-5-scaled) zero (Ho et al. 2020;
    # score_sde init_scale=0), so a block starts as its (possibly rescaled) skip connection.
    x, temb = jax.random.normal(KEY, (1, 4, 4, 8)), jnp.ones((1, 16))
    args = (x,) if isinstance(block, AttnBlock) else (x, temb)
    out, _ = fast_jit(block.init_with_output)(KEY, *args)
    np.testing.assert_allclose(out, scale * x, atol=1e-3)


def test_block_initializers_replace_ddpm_init():
    # The small U-Net's and the VAE's blocks: LeCun normal kernels (std 1 / sqrt(fan_in)), an exactly
    # zero last convolution.
    block = ResBlockDDPM(8, dropout=0.0, initializers=LECUN_ZERO_OUT)
    params = fast_jit(block.init)(KEY, jnp.ones((1, 4, 4, 4)), None)["params"]
    assert np.all(params["conv1"]["kernel"] == 0)
    assert 0.3 < float(jnp.std(params["shortcut"]["kernel"])) < 0.7  # fan_in 4: std 0.5
    assert "temb_proj" not in params  # no noise embedding given


def test_check_resolutions_names_the_size_and_the_multipliers():
    assert check_resolutions((28, 28), (1, 2, 2)) == 4
    with pytest.raises(ValueError, match=r"\(7, 7\) is not divisible by 2, which channel_mults=\(1, 2\)"):
        check_resolutions((7, 7, 1), (1, 2))


def test_ddpm_initialiser_scales():
    # Glorot uniform for scale 1 (bound sqrt(3 / fan_avg)); 1e-10 in variance for scale 0.
    shape = (3, 3, 16, 32)
    bound = math.sqrt(3 / (9 * (16 + 32) / 2))
    w = ddpm_init()(KEY, shape)
    assert 0.9 * bound < np.abs(w).max() <= bound
    assert 0 < np.abs(ddpm_init(0.0)(KEY, shape)).max() <= 1e-5 * bound


@pytest.mark.parametrize(
    "block, size",
    [
        (ResBlockDDPM(8), 8),
        (ResBlockBigGAN(8), 8),
        (ResBlockBigGAN(8, up=True), 16),
        (ResBlockBigGAN(8, down=True, fir=True), 4),
    ],
)
def test_residual_block_shapes(block, size):
    x, temb = jnp.ones((2, 8, 8, 4)), jnp.ones((2, 16))
    out = jax.eval_shape(lambda: block.init_with_output(KEY, x, temb)[0])
    assert out.shape == (2, size, size, 8)


def test_group_norm_groups():
    assert group_norm(128).num_groups == 32
    assert group_norm(16).num_groups == 4
    assert group_norm(6).num_groups == 1


def test_sinusoidal_embedding_layout():
    t = jnp.array([0.0, 3.0])
    emb = sinusoidal_embedding(t, 8)
    assert emb.shape == (2, 8)
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])  # sines then cosines
    np.testing.assert_allclose(sinusoidal_embedding(t, 8, cos_first=True)[0], [1, 1, 1, 1, 0, 0, 0, 0])
    # With `endpoint` the slowest frequency is exactly 1 / max_period; without, it stops one step short.
    np.testing.assert_allclose(emb[1, 3], math.sin(3.0 * 1e-4), rtol=1e-5)
    np.testing.assert_allclose(
        sinusoidal_embedding(t, 8, endpoint=False)[1, 3], math.sin(3.0 * 1e-4 ** (3 / 4)), rtol=1e-5
    )


def test_fourier_embedding_is_a_fixed_function_of_its_parameters():
    emb = GaussianFourierEmbedding(features=16, scale=16.0)
    t = jnp.log(jnp.array([0.01, 1.0, 50.0]))
    params = emb.init(KEY, t)
    out = emb.apply(params, t)
    assert out.shape == (3, 32)
    np.testing.assert_array_equal(out, emb.apply(params, t))
    assert not np.allclose(out, emb.apply(emb.init(jax.random.key(1), t), t))
    np.testing.assert_allclose(out[:, :16] ** 2 + out[:, 16:] ** 2, 1.0, rtol=1e-5)
    # The frequencies are not trained (score_sde stops their gradient).
    grad = jax.grad(lambda p: emb.apply(p, t).sum())(params)
    np.testing.assert_array_equal(grad["params"]["W"], 0.0)


def test_label_embedding_null_row_and_dropout():
    emb = LabelEmbedding(num_classes=3, features=4, dropout=1.0)
    y = jnp.array([0, 2])
    params = emb.init(KEY, y, 2)
    null = emb.apply(params, jnp.array([3, 3]), 2)
    np.testing.assert_array_equal(emb.apply(params, None, 2), null)  # y=None is the null label
    np.testing.assert_array_equal(emb.apply(params, y, 2, train=True, rngs={"dropout": KEY}), null)
    assert not np.allclose(emb.apply(params, y, 2), null)  # no dropout at evaluation
    keep = LabelEmbedding(num_classes=3, features=4, dropout=0.0)
    np.testing.assert_array_equal(keep.apply(params, y, 2, train=True), keep.apply(params, y, 2))


def test_layers_keep_float32_params_under_bfloat16_compute():
    block = ResBlockBigGAN(8, down=True, fir=True, dtype=jnp.bfloat16)
    x, temb = jnp.ones((1, 8, 8, 4)), jnp.ones((1, 16))
    out, params = jax.eval_shape(lambda: block.init_with_output(KEY, x, temb))
    assert out.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
