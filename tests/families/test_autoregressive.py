"""The autoregressive family: causality, key/value-cache sampling equal to full recomputation, exact pixel
levels, top-k sampling, and a character model of a generated text file."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gl_jax.data.pipeline import load_arrays, make_dataset
from gl_jax.data.sources import open_dataset
from gl_jax.families.autoregressive import AROptions, Autoregressive, sample_logits
from gl_jax.families.build import build_autoregressive
from gl_jax.models.transformer import Transformer
from gl_jax.spec import DataSpec
from gl_jax.train import TrainState, make_optimizer, make_train_step, parallel


def _family(positions, *, vocab=17, shape=(4, 4, 1), top_k=0, temperature=1.0):
    model = Transformer(
        vocab_size=vocab, max_len=math.prod(shape), num_layers=2, d_model=16, num_heads=2, positions=positions
    )
    return Autoregressive(
        model=model,
        data_shape=shape,
        vocab_size=vocab,
        options=AROptions(top_k=top_k, temperature=temperature),
    )


@pytest.fixture(scope="module", params=["learned", "rope"])
def trained_family(request):
    """A family and its (initial) parameters, per kind of positions; init compiled once for the module."""
    family = _family(request.param, top_k=5 if request.param == "rope" else 0, temperature=0.7)
    return family, jax.jit(family.init)(jax.random.key(0))


def test_changing_token_i_changes_only_later_predictions(trained_family):
    family, params = trained_family
    tokens = jax.random.randint(jax.random.key(1), (1, 16), 0, 17)
    i = 6
    changed = tokens.at[0, i].set((tokens[0, i] + 5) % 17)
    logits = jax.jit(family.logits)
    before, after = logits(params, tokens), logits(params, changed)  # [1, 16, 17]
    # Position j predicts token j from tokens < j: positions <= i cannot see token i ...
    np.testing.assert_array_equal(before[0, : i + 1], after[0, : i + 1])
    # ... and every later one does.
    assert np.all(np.max(np.abs(before[0, i + 1 :] - after[0, i + 1 :]), axis=-1) > 1e-6)


def test_kv_cache_sampling_equals_full_recomputation(trained_family):
    """Same key, same tokens: with learned positions at temperature 0.7, with RoPE also top-5."""
    family, params = trained_family

    @jax.jit
    def both(params, key):
        cached = family.sample_tokens(params, key, 3)
        return cached, family.sample_tokens(params, key, 3, use_cache=False)

    cached, recomputed = both(params, jax.random.key(3))
    assert cached.shape == (3, 16)
    np.testing.assert_array_equal(cached, recomputed)
    assert len(np.unique(np.asarray(cached))) > 3  # Not a degenerate, constant sample.


def test_top_k_and_temperature():
    logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4]] * 2000))
    keys = jax.random.split(jax.random.key(0), 2)
    top2 = sample_logits(keys[0], logits, top_k=2)
    assert set(np.unique(np.asarray(top2))) == {2, 3}
    np.testing.assert_allclose(np.mean(np.asarray(top2) == 3), 0.4 / 0.7, atol=0.04)
    np.testing.assert_array_equal(sample_logits(keys[1], logits, temperature=0.0), np.full(2000, 3))


@pytest.mark.parametrize("dequantized", [False, True])
def test_pixel_levels_are_recovered_exactly(dequantized):
    from gl_jax.data.pipeline import preprocess_images

    k = np.random.default_rng(0).integers(0, 17, (5, 4, 4, 1))
    rng = np.random.default_rng(1) if dequantized else None
    x = preprocess_images(k, levels=17, rng=rng)
    family = Autoregressive(
        model=_family("rope").model, data_shape=(4, 4, 1), vocab_size=17, dequantized=dequantized
    )
    np.testing.assert_array_equal(family.tokens(jnp.asarray(x)), k.reshape(5, 16))
    np.testing.assert_allclose(
        family.from_tokens(family.tokens(jnp.asarray(x))), preprocess_images(k, levels=17)
    )


def test_character_model_of_a_text_file_learns(tmp_path):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    words = np.random.default_rng(0).choice(["the", "cat", "sat", "on", "a", "mat"], 4000)
    (manual / "corpus.txt").write_text(" ".join(words))
    spec, sources = open_dataset("text/corpus-32", data_dir=str(tmp_path))
    assert spec == DataSpec("text/corpus-32", "vector", (32,), None, None, spec.split_sizes)
    config = ml_collections.ConfigDict(
        {
            "family": "autoregressive",
            "data": {"dequantize": False},
            "model": {"name": "transformer", "num_layers": 1, "d_model": 32, "num_heads": 2},
            "ar": {"vocab_size": 0, "temperature": 1.0, "top_k": 0},
        }
    )
    family = build_autoregressive(config, spec)
    assert family.vocab_size == 256 and not family.image
    data = make_dataset(load_arrays(sources["train"], spec), spec, batch_size=32, seed=0)
    # The trainer's path: parameters born replicated, the shared step compiled over a (1-device) mesh.
    mesh = parallel.make_mesh(jax.devices()[:1])
    tx = make_optimizer(lr=3e-3)
    state = parallel.init_replicated(
        lambda k: TrainState.create(params=family.init(k), tx=tx), jax.random.key(0), mesh
    )
    step = parallel.compile_train_step(make_train_step(family.loss), mesh)
    bits = []
    for i in range(60):
        state, metrics = step(state, parallel.shard_batch(data[i], mesh), jax.random.key(1))
        bits.append(float(metrics["bits_per_dim"]))
    # From ~8 bits per character (a random 256-way model) to well under the ~3 bits of a uniform choice
    # among the corpus's 12 characters.
    assert bits[0] > 6 and bits[-1] < 3.0, bits[::10]
    # The bits/dim `--mode eval` reports from the stored byte values are the training loss's, exactly.
    test = load_arrays(sources["test"], spec)["x"][:32]
    bpd, nfe = jax.jit(family.bits_per_dim)(state.params, jax.random.key(3), test, None)
    _, metrics = jax.jit(family.loss)(state.params, {"x": jnp.asarray(test)}, None)
    np.testing.assert_allclose(float(jnp.mean(bpd)), float(metrics["bits_per_dim"]), rtol=1e-5)
    assert int(nfe) == 1
    text = jax.jit(lambda p, k: family.sample(p, k, 2))(state.params, jax.random.key(2))
    assert text.shape == (2, 32) and np.all((np.asarray(text) >= 0) & (np.asarray(text) < 256))
