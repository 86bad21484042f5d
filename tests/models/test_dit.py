"""DiT: published parameter counts, the fixed position embedding, adaLN-Zero, smoke step, label dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.models import DiT, build_model
from gl_jax.models.dit import sincos_pos_embed_2d
from tests.models._smoke import KEY, fast_jit, num_params, random_params, smoke

# Peebles & Xie 2023 report 33M (DiT-S/2), 130M (B/2), 458M (L/2) and 675M (XL/2) parameters for the
# published setting: 32x32x4 latents of 256x256 ImageNet, 1000 classes (plus the null label of
# classifier-free guidance), learned variance (8 output channels). The fixed position embedding is not a
# parameter here (it is a frozen tensor in their code, 0.3M for XL/2).
PUBLISHED_M = {"DiT-S/2": 33, "DiT-B/2": 130, "DiT-L/2": 458, "DiT-XL/2": 675}
COUNTS = {"DiT-S/2": 32_865_056, "DiT-B/2": 130_315_808, "DiT-L/2": 457_840_672, "DiT-XL/2": 674_834_720}


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_parameter_counts(name):
    model = DiT.from_variant(name, num_classes=1000, learn_sigma=True)
    count = num_params(model, (1, 32, 32, 4), jax.ShapeDtypeStruct((1,), jnp.int32))
    assert count == COUNTS[name]
    assert round(count / 1e6) == PUBLISHED_M[name]


def test_patch_size_only_changes_the_embedding_and_output_layers():
    shape, y = (1, 32, 32, 4), jax.ShapeDtypeStruct((1,), jnp.int32)
    counts = {
        p: num_params(DiT.from_variant(f"DiT-S/{p}", num_classes=1000, learn_sigma=True), shape, y)
        for p in (2, 4)
    }
    # Patch embedding 4 p^2 D and final linear D 8 p^2 (+ 8 p^2 biases) grow with p^2; D = 384.
    assert counts[4] - counts[2] == (4 * 384 + 8 * 384 + 8) * (16 - 4)


def test_sincos_position_embedding():
    emb = sincos_pos_embed_2d(16, 3, 4)  # 3 rows, 4 columns
    assert emb.shape == (12, 16) and emb.dtype == np.float32
    grid = emb.reshape(3, 4, 16)
    np.testing.assert_allclose(grid[:, :, :8], np.broadcast_to(grid[:1, :, :8], (3, 4, 8)))  # columns only
    np.testing.assert_allclose(grid[:, :, 8:], np.broadcast_to(grid[:, :1, 8:], (3, 4, 8)))  # rows only
    np.testing.assert_allclose(grid[0, 0], [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4)  # sin 0, cos 0
    np.testing.assert_allclose(grid[0, 1, 0], np.sin(1.0))


def test_adaln_zero_starts_at_zero_output():
    # adaLN-Zero gates and the final linear layer start at zero (Peebles & Xie 2023, sec. 3.2).
    model = DiT.from_variant("tiny")
    out, _ = fast_jit(model.init_with_output)(KEY, jnp.ones((2, 8, 8, 1)), jnp.array([1.0, 500.0]))
    np.testing.assert_array_equal(out, 0.0)


def test_tiny_dit_runs_and_differentiates():
    smoke(DiT.from_variant("tiny", num_classes=10, learn_sigma=True), num_classes=10, channel_factor=2)


def test_label_dropout_replaces_given_labels_by_the_null_label():
    model = DiT.from_variant("tiny", num_classes=3, label_dropout=1.0)
    x, cond, y = jax.random.normal(KEY, (2, 8, 8, 1)), jnp.array([0.3, 2.0]), jnp.array([0, 2])
    params = random_params(model, x, cond, y)
    apply = fast_jit(model.apply, static_argnames="train")
    rngs = {"dropout": jax.random.key(4, impl="rbg")}
    no_label = jnp.full((2,), 3)  # y = num_classes is the unconditional ("null") label
    null = apply(params, x, cond, no_label)
    np.testing.assert_allclose(apply(params, x, cond, y, train=True, rngs=rngs), null, rtol=1e-5, atol=1e-6)
    assert not np.allclose(apply(params, x, cond, y), null)
    np.testing.assert_allclose(
        apply(params, x, cond, no_label, train=True, rngs=rngs), null, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(apply(params, x, cond, None), null, rtol=1e-5, atol=1e-6)


def test_build_model_and_errors():
    model = build_model("dit", {"variant": "DiT-B/4", "num_classes": 10})
    assert (model.depth, model.hidden_size, model.num_heads, model.patch_size) == (12, 768, 12, 4)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        jax.eval_shape(DiT(patch_size=4).init, KEY, jnp.ones((1, 6, 6, 1)), jnp.ones((1,)))
