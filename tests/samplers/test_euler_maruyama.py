"""Euler-Maruyama with exact scores reproduces Gaussian and Gaussian-mixture targets."""

import jax
import jax.numpy as jnp
import numpy as np

from gl_jax.data.toy import ring_mixture
from gl_jax.samplers import SAMPLERS, euler_maruyama
from gl_jax.sde import VPSDE


def sliced_w2(x, y, key, num_projections=128):
    """Sliced 2-Wasserstein distance between equal-size point sets."""
    dirs = jax.random.normal(key, (x.shape[1], num_projections))
    dirs /= jnp.linalg.norm(dirs, axis=0, keepdims=True)
    px, py = jnp.sort(x @ dirs, axis=0), jnp.sort(y @ dirs, axis=0)
    return float(jnp.sqrt(jnp.mean((px - py) ** 2)))


def test_gaussian_target_moments():
    mu, s = 1.0, 0.5
    sde = VPSDE()

    def score(x, t):
        a, sg = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        return -(x - a * mu) / (a**2 * s**2 + sg**2)

    sample = jax.jit(lambda k: euler_maruyama(k, score, sde, (20_000, 2), steps=500))
    result = sample(jax.random.key(0))
    assert int(result.nfe) == 500
    x = np.asarray(result.x)
    np.testing.assert_allclose(x.mean(0), mu, atol=0.02)
    np.testing.assert_allclose(x.std(0), s, rtol=0.04)


def test_mixture_target_sliced_w2():
    """On the 8-mode ring, SW2(samples, exact samples) is within 0.05 of the exact-vs-exact floor."""
    gmm, sde = ring_mixture(), VPSDE()
    n = 4000
    x = euler_maruyama(jax.random.key(1), gmm.score_fn(sde), sde, (n, 2), steps=1000).x
    ref = gmm.sample_numpy(np.random.default_rng(0), n)
    ref2 = gmm.sample_numpy(np.random.default_rng(1), n)
    key = jax.random.key(2)
    floor = sliced_w2(jnp.asarray(ref2), jnp.asarray(ref), key)
    assert sliced_w2(x, jnp.asarray(ref), key) < floor + 0.05
    # Every mode is populated in proportion to its weight (1/8).
    dist = np.linalg.norm(np.asarray(x)[:, None] - gmm.means[None], axis=-1)
    counts = np.bincount(dist.argmin(1), minlength=8) / n
    np.testing.assert_allclose(counts, 1 / 8, atol=0.03)


def test_x_init_is_used_and_sampler_vmaps():
    sde = VPSDE()
    score = lambda x, t: -x
    x_init = jnp.zeros((3, 2))
    a = euler_maruyama(jax.random.key(0), score, sde, (3, 2), steps=5, x_init=x_init).x
    b = euler_maruyama(jax.random.key(0), score, sde, (3, 2), steps=5).x
    assert not np.allclose(a, b)
    keys = jax.random.split(jax.random.key(0), 4)
    batched = jax.vmap(lambda k: euler_maruyama(k, score, sde, (3, 2), steps=5).x)(keys)
    assert batched.shape == (4, 3, 2)
    assert SAMPLERS["euler_maruyama"] is euler_maruyama


def test_time_grids():
    from gl_jax.samplers import time_grid
    from gl_jax.sde import EDMSDE

    sde = VPSDE()
    for kind in ("uniform", "quadratic", "logsnr", "karras"):
        ts = time_grid(sde, 10, grid=kind)
        assert ts.shape == (11,) and np.all(np.diff(np.asarray(ts)) < 0)
        np.testing.assert_allclose([ts[0], ts[-1]], [sde.T, sde.t_min], rtol=1e-6)
    lam = sde.log_snr(time_grid(sde, 10, grid="logsnr"))
    np.testing.assert_allclose(np.diff(np.asarray(lam)), float(lam[1] - lam[0]), rtol=1e-3)
    # For EDM, t is sigma: the Karras grid is EDM's eq. 5 exactly.
    edm = EDMSDE()
    i = np.arange(19) / 18
    expected = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(time_grid(edm, 18, grid="karras"), expected, rtol=1e-4)


def test_every_sampler_takes_the_common_keywords_and_grid_arrays():
    import pytest

    from gl_jax.samplers import ddim, time_grid

    for name in SAMPLERS:
        options = SAMPLERS.options(name)
        assert {"t_start", "grid", "rho"} <= set(options) and not {"steps", "x_init"} & set(options), name
    with pytest.raises(ValueError, match="Did you mean 'ddim'"):
        SAMPLERS["ddmi"]
    sde, score = VPSDE(), lambda x, t: -x
    ts = time_grid(sde, 6, grid="karras", rho=5.0)
    np.testing.assert_array_equal(time_grid(sde, 6, grid=ts), ts)
    with pytest.raises(ValueError, match="grid array"):
        time_grid(sde, 5, grid=ts)
    by_name = ddim(jax.random.key(0), score, sde, (4, 2), steps=6, grid="karras", rho=5.0).x
    by_array = ddim(jax.random.key(0), score, sde, (4, 2), steps=6, grid=ts).x
    np.testing.assert_array_equal(by_name, by_array)
