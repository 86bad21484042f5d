"""The diffusion family: every prediction type and noise conditioning gives the exact score when the network
is exact; per-example dropout keys make the loss independent of how the batch is split; guidance."""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.analytic import GaussianMixture, random_mixture
from gl_jax.families.build import SDES
from gl_jax.families.diffusion import NOISE_CONDITIONS, ScoreDiffusion
from gl_jax.losses.weightings import UncertaintyWeight
from gl_jax.parametrization import convert
from gl_jax.samplers import ddim
from gl_jax.samplers.guidance import evaluation_times
from gl_jax.sde import EDMSDE, VESDE, VPSDE, GaussianDiffusion, broadcast_to_data


class ExactNet(nn.Module):
    """A 'network' that outputs the exact prediction of a mixture, given the time through its conditioning."""

    gmm: Any
    sde: Any
    prediction: str
    noise_cond: str

    @nn.compact
    def __call__(self, x, cond):
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))  # Perturbed in the loss test.
        t = {
            "t": cond,
            "999t": cond / 999.0,
        }.get(self.noise_cond)
        if t is None:  # Invert sigma(t) (log_sigma / sigma) by bisection, as the time grids do.
            sig = jnp.exp(cond) if self.noise_cond == "log_sigma" else cond
            t = self.sde.t_from_log_snr(-2.0 * jnp.log(sig))
        alpha = broadcast_to_data(self.sde.alpha(t), x)
        sigma = broadcast_to_data(self.sde.sigma(t), x)
        score = self.gmm.score_fn(self.sde)(x, t)
        return convert(score, source="score", target=self.prediction, x_t=x, alpha=alpha, sigma=sigma) + bias


def _family(gmm: GaussianMixture, sde: GaussianDiffusion, prediction: str, noise_cond: str, **kw):
    net = ExactNet(gmm, sde, prediction, noise_cond)
    return ScoreDiffusion(
        model=net, sde=sde, data_shape=(gmm.dim,), prediction=prediction, noise_cond=noise_cond, **kw
    )


CASES = [
    (VPSDE(), "eps", "t"),
    (VPSDE(), "x0", "999t"),
    (VPSDE(), "v", "t"),
    (VESDE(), "eps", "log_sigma"),
    (VESDE(), "score", "t"),
    (EDMSDE(), "x0", "sigma"),
]


@pytest.mark.parametrize(("sde", "prediction", "noise_cond"), CASES)
def test_exact_network_gives_exact_score(sde, prediction, noise_cond):
    gmm = random_mixture(3, seed=4)
    fam = _family(gmm, sde, prediction, noise_cond)
    params = fam.init(jax.random.key(0))
    x = gmm.sample(jax.random.key(1), 16)
    t = jnp.linspace(sde.t_min + 0.05 * (sde.T - sde.t_min), sde.T, 16)
    x_t = x + sde.sigma(t)[:, None] * jax.random.normal(jax.random.key(2), x.shape)
    ours = fam.score_fn(params)(x_t, t)
    exact = gmm.score_fn(sde)(x_t, t)
    np.testing.assert_allclose(ours, exact, rtol=2e-3, atol=2e-3 * float(jnp.max(jnp.abs(exact))))


@pytest.mark.parametrize(("sde", "prediction", "noise_cond"), CASES[:4])
def test_loss_is_smallest_at_the_exact_network(sde, prediction, noise_cond):
    """DSM through the family: the exact prediction beats a perturbed one on the same draws."""
    gmm = random_mixture(2, seed=5)
    fam = _family(gmm, sde, prediction, noise_cond)
    params = fam.init(jax.random.key(0))
    batch = {"x": gmm.sample(jax.random.key(1), 512)}
    keys = jax.random.split(jax.random.key(2), 512)
    exact, _ = fam.loss(params, batch, keys)
    perturbed, _ = fam.loss({"bias": params["bias"] + 0.05}, batch, keys)
    assert float(exact) < float(perturbed)


class DropoutNet(nn.Module):
    """A small MLP with dropout and optional class labels (label dropout to the null class)."""

    dropout: float = 0.5
    num_classes: int = 0
    label_dropout: float = 0.0

    @nn.compact
    def __call__(self, x, cond, y=None, *, train=False):
        h = nn.Dense(32)(jnp.concatenate([x, cond[:, None]], axis=-1))
        if self.num_classes:
            if train and self.label_dropout:
                drop = jax.random.bernoulli(self.make_rng("dropout"), self.label_dropout, y.shape)
                y = jnp.where(drop, self.num_classes, y)
            h = h + nn.Embed(self.num_classes + 1, 32)(y)
        h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
        return nn.Dense(x.shape[-1])(h)


def test_dropout_is_per_example_so_batch_splits_agree():
    fam = ScoreDiffusion(model=DropoutNet(), sde=VPSDE(), data_shape=(4,))
    params = fam.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 4))
    keys = jax.random.split(jax.random.key(2), 8)
    full, _ = fam.loss(params, {"x": x}, keys)
    halves = [fam.loss(params, {"x": x[s]}, keys[s])[0] for s in (slice(0, 4), slice(4, 8))]
    np.testing.assert_allclose(float(full), float(np.mean(halves)), rtol=1e-6)
    # Dropout is on in training: the same draws with dropout off give a different loss.
    no_dropout = ScoreDiffusion(model=DropoutNet(dropout=0.0), sde=VPSDE(), data_shape=(4,))
    assert abs(float(no_dropout.loss(params, {"x": x}, keys)[0]) - float(full)) > 1e-6


def test_guidance_zero_is_unconditional_and_one_is_conditional():
    net = DropoutNet(dropout=0.0, num_classes=3, label_dropout=0.2)
    fam = ScoreDiffusion(model=net, sde=VPSDE(), data_shape=(4,), sampler=functools.partial(ddim, steps=5))
    params = fam.init(jax.random.key(0))
    # Perturb the label embedding so conditioning matters.
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(3), p.shape), params)
    key = jax.random.key(1)
    samples = {
        w: np.asarray(ScoreDiffusion(**{**fam.__dict__, "guidance": w}).sample(params, key, 6))
        for w in (0.0, 1.0, 3.0)
    }
    labels = jnp.arange(6) % 3
    x = jax.random.normal(key, (6, 4))
    t = jnp.full((6,), 0.5)
    uncond = fam.score_fn(params, jnp.full((6,), 3))(x, t)
    cond = fam.score_fn(params, labels)(x, t)
    assert not np.allclose(uncond, cond, atol=1e-4)
    assert not np.allclose(samples[0.0], samples[1.0], atol=1e-4)
    assert not np.allclose(samples[3.0], samples[1.0], atol=1e-4)
    # w = 0: the unconditional sampler; w = 1: the conditional one (same starting noise and steps).
    run = lambda score: np.asarray(ddim(key, score, fam.sde, (6, 4), steps=5).x)
    np.testing.assert_allclose(samples[0.0], run(fam.score_fn(params, jnp.full((6,), 3))), atol=1e-5)
    np.testing.assert_allclose(samples[1.0], run(fam.score_fn(params, labels)), atol=1e-5)


def test_bad_options_name_the_choices():
    with pytest.raises(ValueError, match="noise_cond"):
        ScoreDiffusion(model=DropoutNet(), sde=VPSDE(), data_shape=(4,), noise_cond="time")
    with pytest.raises(ValueError, match="prediction"):
        ScoreDiffusion(model=DropoutNet(), sde=VPSDE(), data_shape=(4,), prediction="noise")
    with pytest.raises(ValueError, match="Did you mean 'subvp'"):
        SDES.build("sub_vp", {}, where="config.sde")
    assert set(NOISE_CONDITIONS) == {"t", "999t", "log_sigma", "sigma"}
    assert {"vp", "subvp", "ve", "edm", "ddpm"} <= set(SDES)


def test_guidance_interval_from_the_family_covers_or_limits_the_guided_steps():
    net = DropoutNet(dropout=0.0, num_classes=3, label_dropout=0.2)
    fam = ScoreDiffusion(
        model=net, sde=VPSDE(), data_shape=(4,), sampler=functools.partial(ddim, steps=5), guidance=3.0
    )
    params = fam.init(jax.random.key(0))
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(3), p.shape), params)
    key = jax.random.key(1)
    draw = lambda interval: np.asarray(
        ScoreDiffusion(**{**fam.__dict__, "guidance_interval": interval}).sample(params, key, 6)
    )
    everywhere, conditional = (
        draw(None),
        np.asarray(ScoreDiffusion(**{**fam.__dict__, "guidance": 1.0}).sample(params, key, 6)),
    )
    # An interval holding every noise level of the VP process (sigma / alpha in [0.01, 160]) is plain CFG.
    np.testing.assert_allclose(draw((0.0, 1e6)), everywhere, rtol=1e-6, atol=1e-6)
    # One holding none of them is the conditional sampler; one holding some of them is neither.
    np.testing.assert_allclose(draw((1e5, 1e6)), conditional, rtol=1e-6, atol=1e-6)
    partial = draw((0.5, 3.0))
    assert not np.allclose(partial, everywhere, atol=1e-4) and not np.allclose(
        partial, conditional, atol=1e-4
    )


def test_guidance_interval_from_the_config_reaches_the_family_and_bad_ones_are_one_error():
    from gl_jax.train.validation import ConfigError, check_config
    from tests.conftest import load_config

    config = load_config("digits_vp_cond", "smoke")
    config.sample.guidance_interval = (0.3, 5.0)
    check_config(config, mode="sample")
    from gl_jax.families.build import build_score
    from gl_jax.spec import DataSpec

    spec = DataSpec("sklearn_digits", "image", (8, 8, 1), 17, 10, {"train": 1437, "test": 360})
    assert build_score(config, spec).guidance_interval == (0.3, 5.0)
    config.sample.guidance_interval = (5.0, 0.3)
    with pytest.raises(ConfigError, match=r"config.sample.guidance_interval=\(5.0, 0.3\) is invalid"):
        check_config(config, mode="sample")


def _perturbed(params, scale=0.3, seed=3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, moved)


def test_guided_sampling_counts_two_network_evaluations_per_guided_step():
    net = DropoutNet(dropout=0.0, num_classes=3, label_dropout=0.2)
    fam = ScoreDiffusion(
        model=net, sde=VPSDE(), data_shape=(4,), sampler=functools.partial(ddim, steps=5), guidance=3.0
    )
    params = _perturbed(fam.init(jax.random.key(0)))
    key = jax.random.key(1)
    nfe = lambda **kw: int(
        jax.jit(ScoreDiffusion(**{**fam.__dict__, **kw}).sample_counted, static_argnums=2)(params, key, 6).nfe
    )
    assert nfe() == 10  # Both networks at each of the 5 steps.
    assert nfe(guidance=1.0) == 5
    assert nfe(guidance_interval=(1e5, 1e6)) == 5  # No step inside: the conditional network alone.
    # A partial interval: one extra evaluation per step whose sigma / alpha lies in (0.5, 3].
    times = evaluation_times(fam.sampler, fam.sde, (1, 4))
    level = np.asarray(fam.sde.sigma(times) / fam.sde.alpha(times))
    inside = int(np.sum((level > 0.5) & (level <= 3.0)))
    assert 0 < inside < 5
    assert nfe(guidance_interval=(0.5, 3.0)) == 5 + inside


def test_autoguidance_by_the_model_itself_is_the_unguided_sampler():
    net = DropoutNet(dropout=0.0)
    fam = ScoreDiffusion(model=net, sde=VPSDE(), data_shape=(4,), sampler=functools.partial(ddim, steps=5))
    params = _perturbed(fam.init(jax.random.key(0)))
    key = jax.random.key(1)
    plain = fam.sample_counted(params, key, 6)
    guided = lambda guide_params: dataclasses.replace(
        fam, guide_model=net, guide_params=guide_params, autoguidance=2.2
    ).sample_counted(params, key, 6)
    itself = guided(params)
    np.testing.assert_allclose(np.asarray(itself.x), np.asarray(plain.x), rtol=1e-6, atol=1e-6)
    assert int(plain.nfe) == 5 and int(itself.nfe) == 10
    # A different (weaker) guide moves the samples: the combination is live.
    other = guided(_perturbed(params, scale=0.1, seed=9))
    assert not np.allclose(np.asarray(other.x), np.asarray(plain.x), atol=1e-4)
    with pytest.raises(ValueError, match="use one"):
        dataclasses.replace(fam, guide_model=net, guidance=2.0)


def test_uncertainty_weighting_is_a_trained_group_of_the_parameters():
    gmm = random_mixture(4, num_modes=2, seed=0)
    plain = ScoreDiffusion(model=DropoutNet(dropout=0.0), sde=VPSDE(), data_shape=(4,))
    fam = dataclasses.replace(plain, uncertainty=UncertaintyWeight(features=16))
    params = fam.init(jax.random.key(1))
    assert set(params) == {"denoiser", "uncertainty"}
    batch = {"x": gmm.sample(jax.random.key(2), 64)}
    keys = jax.random.split(jax.random.key(3), 64)
    base, _ = plain.loss(params["denoiser"], batch, keys)
    # At init u = 0: l e^-u + u = l.
    loss, metrics = fam.loss(params, batch, keys)
    np.testing.assert_allclose(float(loss), float(base), rtol=1e-6)
    # u = c everywhere (the output layer's bias): l e^-c + c, by hand.
    shifted = jax.tree.map(lambda p: p, params)
    shifted["uncertainty"]["Dense_0"]["bias"] = jnp.full((1,), 0.5)
    loss, metrics = fam.loss(shifted, batch, keys)
    np.testing.assert_allclose(float(loss), float(base) * np.exp(-0.5) + 0.5, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["log_var"]), 0.5, rtol=1e-6)
    grads = jax.grad(lambda p: fam.loss(p, batch, keys)[0])(params)
    assert float(jnp.abs(grads["uncertainty"]["Dense_0"]["bias"]).sum()) > 0
    # Sampling reads the denoiser group only.
    np.testing.assert_array_equal(
        np.asarray(fam.sample(params, jax.random.key(4), 3)),
        np.asarray(plain.sample(params["denoiser"], jax.random.key(4), 3)),
    )


def test_loss_and_guide_options_from_the_config():
    from gl_jax.families.build import build_score
    from gl_jax.losses.score import LogNormalTimes, MinSNRWeighting
    from gl_jax.spec import DataSpec
    from gl_jax.train.saved_params import load_params
    from tests.conftest import load_config

    spec = DataSpec("sklearn_digits", "image", (8, 8, 1), 17, 10, {"train": 1437, "test": 360})
    config = load_config("digits_vp", "smoke")
    config.loss.weighting = "min_snr"
    config.loss.weighting_options = {"gamma": 3.0}
    config.loss.time_sampling = "edm"
    config.loss.time_sampling_options = {"p_mean": -0.4, "p_std": 1.0}
    config.loss.uncertainty = True
    config.loss.uncertainty_options = {"features": 32}
    family = build_score(config, spec)
    assert family.weighting == MinSNRWeighting(gamma=3.0)
    assert family.time_sampling == LogNormalTimes(p_mean=-0.4, p_std=1.0)
    assert family.uncertainty == UncertaintyWeight(features=32)
    config.loss.time_sampling_options = {"p_men": -0.4}
    with pytest.raises(ValueError, match=r"config.loss.time_sampling_options.*p_mean"):
        build_score(config, spec)
    config.loss.time_sampling_options = {}
    # The guide: read by the loader from the named run, shaped like the guide network's parameters.
    config.sample.guide_checkpoint = "runs/early"
    seen = {}

    def loader(path, target, *, step, use_ema):
        seen.update(path=path, step=step, use_ema=use_ema)
        return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)

    config.sample.guide_step = 200
    family = build_score(config, spec, load_params=loader)
    assert seen == {"path": "runs/early", "step": 200, "use_ema": True}
    assert family.autoguidance == config.sample.guide_weight and family.guide_model == family.model
    assert set(family.guide_params) == {"denoiser", "uncertainty"}
    with pytest.raises(FileNotFoundError, match="config.sample.guide_checkpoint must name"):
        build_score(config, spec, load_params=load_params)
