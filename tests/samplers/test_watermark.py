"""Tree-Ring watermarks: the key's structure, the null law of the test by simulation, detection of
watermarked DDIM samples of the exact digits mixture, and a robustness row per perturbation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from benchmarks import watermark as bench
from gl_jax.eval.detection import tpr_at_fpr
from gl_jax.pixels import to_signed
from gl_jax.samplers.watermark import (
    PATTERNS,
    detect,
    latent_statistic,
    noncentral_chi2_cdf,
    tree_ring_key,
    watermark_noise,
)
from gl_jax.sde import VPSDE

SDE = VPSDE()
SHAPE = (8, 8, 3)
N = 200


def _negated(index, size):
    return (-np.arange(size)[index]) % size


@pytest.mark.parametrize("pattern", PATTERNS)
def test_key_and_noise(pattern):
    wm = tree_ring_key(jax.random.key(0), SHAPE, radius=3, channel=1, pattern=pattern)
    mask, key = np.asarray(wm.mask), np.asarray(wm.pattern)
    assert mask.shape == key.shape == SHAPE and mask.sum() == 29  # Lattice points with |k| <= 3.
    assert not mask[..., 0].any() and not mask[..., 2].any()
    flipped = (_negated(slice(None), 8)[:, None], _negated(slice(None), 8)[None, :])
    np.testing.assert_array_equal(mask[flipped], mask)  # Symmetric under k -> -k...
    np.testing.assert_allclose(key[flipped], np.conj(key), atol=1e-6)  # ...and Hermitian.
    if pattern == "rings":
        ring = np.maximum(np.ceil(np.hypot(*np.meshgrid(*[np.fft.fftfreq(8) * 8] * 2, indexing="ij"))), 1)
        for i in (1, 2, 3):
            values = key[..., 1][(ring == i) & mask[..., 1]]
            np.testing.assert_allclose(values, values[0])  # One real value per ring.
            assert values.imag.max() == 0.0
    if pattern == "zeros":
        assert not key.any()

    noise = watermark_noise(jax.random.key(1), (4, *SHAPE), wm)
    spectrum = np.asarray(jnp.fft.fft2(noise, axes=(1, 2), norm="ortho"))
    gaussian = np.asarray(
        jnp.fft.fft2(jax.random.normal(jax.random.key(1), (4, *SHAPE)), axes=(1, 2), norm="ortho")
    )
    np.testing.assert_allclose(spectrum[:, mask], np.broadcast_to(key[mask], (4, 29)), atol=1e-5)
    np.testing.assert_allclose(spectrum[:, ~mask], gaussian[:, ~mask], atol=1e-5)
    stat, p = latent_statistic(noise, wm)
    assert np.all(np.asarray(stat) < 1e-8) and np.all(np.asarray(p) < 1e-10)


def test_bad_keys_are_refused():
    with pytest.raises(ValueError, match="radius"):
        tree_ring_key(jax.random.key(0), SHAPE, radius=4)  # Would reach the Nyquist frequency.
    with pytest.raises(ValueError, match="channel"):
        tree_ring_key(jax.random.key(0), SHAPE, radius=2, channel=3)
    with pytest.raises(ValueError, match="pattern"):
        tree_ring_key(jax.random.key(0), SHAPE, radius=2, pattern="square")
    wm = tree_ring_key(jax.random.key(0), SHAPE, radius=2)
    with pytest.raises(ValueError, match="shape"):
        watermark_noise(jax.random.key(0), (2, 8, 8, 1), wm)


def test_noise_over_keys():
    """Over random keys, "rand" noise is exactly N(0, I) and "rings" noise has unit variance per pixel."""
    keys = jax.random.split(jax.random.key(2), 4000)

    def one(key, pattern):
        k_key, k_noise = jax.random.split(key)
        wm = tree_ring_key(k_key, (8, 8, 1), radius=2, pattern=pattern)
        return watermark_noise(k_noise, (1, 8, 8, 1), wm)[0, ..., 0]  # [H, W]

    rand = np.asarray(jax.vmap(lambda k: one(k, "rand"))(keys)).reshape(len(keys), -1)  # [N, 64]
    rings = np.asarray(jax.vmap(lambda k: one(k, "rings"))(keys)).reshape(len(keys), -1)
    assert stats.kstest(rand[:, 0], "norm").pvalue > 0.01
    np.testing.assert_allclose(np.cov(rand.T), np.eye(64), atol=0.1)
    np.testing.assert_allclose(rings.var(0).mean(), 1.0, atol=0.03)


@pytest.mark.parametrize("df, nc", [(5, 0.0), (13, 22.0), (29, 3.5), (120, 400.0)])
def test_noncentral_chi2_cdf_matches_scipy(df, nc):
    x = stats.ncx2.ppf(np.array([1e-6, 0.01, 0.3, 0.5, 0.9, 0.999]), df, max(nc, 1e-12))
    np.testing.assert_allclose(
        noncentral_chi2_cdf(jnp.asarray(x), df, nc), stats.ncx2.cdf(x, df, nc), atol=3e-5
    )


@pytest.mark.parametrize("pattern", PATTERNS)
def test_p_values_are_uniform_under_the_null(pattern):
    wm = tree_ring_key(jax.random.key(3), SHAPE, radius=3, channel=None, pattern=pattern)
    z = jax.random.normal(jax.random.key(4), (5000, *SHAPE))  # Noise without the key.
    stat, p = latent_statistic(z, wm)
    df, nc = 3 * 29, float(jnp.sum(jnp.abs(wm.pattern) ** 2))
    assert abs(float(stat.mean()) - (df + nc)) < 4 * np.sqrt(2 * (df + 2 * nc) / len(z))
    assert stats.kstest(np.asarray(p), "uniform").pvalue > 0.01


@pytest.fixture(scope="module")
def digits():
    """DDIM samples of the exact digits mixture from watermarked and from plain prior noise, and the key."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = to_signed(data.images.astype(np.int32), levels=17).reshape(len(data.images), -1)  # [N, 64]
    score = bench.image_score(bench.class_mixture(x, data.target), SDE)
    key_wm, key_w, key_u = jax.random.split(jax.random.key(5), 3)
    wm = tree_ring_key(key_wm, bench.SHAPE, radius=2)
    shape = (N, *bench.SHAPE)
    marked = bench.draw_samples(score, SDE, watermark_noise(key_w, shape, wm, std=SDE.prior_std()), steps=50)
    unmarked = bench.draw_samples(score, SDE, SDE.prior_sample(key_u, shape), steps=50)
    return score, wm, marked, unmarked


def test_detection_on_unperturbed_samples(digits):
    score, wm, marked, unmarked = digits
    test = jax.jit(lambda x: detect(score, SDE, x, wm, steps=50, grid="quadratic"))  # The samples' grid.
    found, plain = test(jnp.asarray(marked)), test(jnp.asarray(unmarked))
    assert int(found.nfe) == 50
    assert tpr_at_fpr(-np.asarray(plain.statistic), -np.asarray(found.statistic), 0.01) >= 0.99
    assert np.mean(np.asarray(found.p_value) < 0.01) >= 0.99
    # The samples of plain noise invert to it: their p-values follow the null law.
    assert stats.kstest(np.asarray(plain.p_value), "uniform").pvalue > 0.01


def test_robustness_table_has_a_row_per_perturbation(digits):
    score, wm, marked, unmarked = digits
    rows = bench.robustness_table(marked, unmarked, score, SDE, wm, steps=50)
    assert [r["perturbation"] for r in rows] == list(bench.PERTURBATIONS)
    for r in rows:
        assert all(0.0 <= r[k] <= 1.0 for k in ("auc", "tpr_at_1pct_fpr", "power_p01", "size_p01")), r
    table = {r["perturbation"]: r for r in rows}
    assert table["none"]["tpr_at_1pct_fpr"] >= 0.99
    assert table["noise 0.05"]["auc"] > 0.9 and table["noise 0.05"]["tpr_at_1pct_fpr"] > 0.5  # Beats chance.
    assert "noise 0.05" in bench.format_table(rows)
