"""Eval settings with options.grid = "fitted": the grid is fitted once per checkpoint and setting, kept in
the workdir, read back on the next evaluation, fitted anew for another checkpoint, and bound to the
sampler as an array."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gl_jax.analytic import random_mixture
from gl_jax.eval import fitted_grid
from gl_jax.eval.fitted_grid import fitted_setting
from gl_jax.eval.settings import EvalSetting, bind
from gl_jax.families import ScoreDiffusion
from gl_jax.samplers import dpm_solver_pp, time_grid
from gl_jax.sde import VPSDE

GMM = random_mixture(2, seed=3)


class ExactEps(nn.Module):
    @nn.compact
    def __call__(self, x, t):
        return GMM.eps_fn(VPSDE())(x, t) + self.param("b", nn.initializers.zeros, (2,))


FAMILY = ScoreDiffusion(model=ExactEps(), sde=VPSDE(), data_shape=(2,))
SETTING = EvalSetting("dpm_5_fitted", "dpm_solver_pp", 5, (("grid", "fitted"), ("order", 2)), "none")


def test_fitted_grid_is_fitted_once_per_checkpoint_and_bound_as_an_array(tmp_path, monkeypatch):
    calls = []

    def fake_fit(key, score_fn, sde, shape, *, steps, sampler):
        calls.append((shape, steps, sampler.keywords))
        assert score_fn(jnp.zeros(shape), jnp.full(shape[:1], 0.5)).shape == shape  # The model's score.
        return time_grid(sde, steps, grid="logsnr") ** 1.01  # Some decreasing grid with the same ends.

    monkeypatch.setattr(fitted_grid, "fit_time_steps", fake_fit)
    params = FAMILY.init(jax.random.key(0))
    fit = functools.partial(
        fitted_setting, FAMILY, params, folder=str(tmp_path), key=jax.random.key(1), batch_size=16
    )
    first = fit(SETTING, fingerprint={"checkpoint_step": 100, "use_ema": True})
    assert calls == [((16, 2), 5, {"order": 2})]
    options = dict(first.options)
    assert options["order"] == 2 and len(options["grid"]) == 6
    saved = json.loads((tmp_path / "dpm_5_fitted.json").read_text())
    assert saved["grid"] == list(options["grid"]) and saved["fitted_for"]["checkpoint_step"] == 100
    # The same checkpoint: read back, not fitted again.
    assert fit(SETTING, fingerprint={"checkpoint_step": 100, "use_ema": True}) == first
    assert len(calls) == 1
    # Another checkpoint: fitted anew. A setting without "fitted" is left alone.
    fit(SETTING, fingerprint={"checkpoint_step": 200, "use_ema": True})
    assert len(calls) == 2
    plain = EvalSetting("dpm_5", "dpm_solver_pp", 5, (("order", 2),), "none")
    assert fit(plain, fingerprint={"checkpoint_step": 200, "use_ema": True}) is plain
    # The bound sampler samples on the array.
    grid = jnp.asarray(options["grid"])
    key = jax.random.key(2)
    got = bind(first)(key, FAMILY.score_fn(params), FAMILY.sde, (8, 2)).x
    want = dpm_solver_pp(key, FAMILY.score_fn(params), FAMILY.sde, (8, 2), steps=5, order=2, grid=grid).x
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_fitted_grid_needs_a_diffusion_score_and_is_refused_outside_eval():
    from gl_jax.families import GAN

    with pytest.raises(ValueError, match="fits time steps to a diffusion model's score; family GAN"):
        fitted_setting(
            GAN.__new__(GAN), {}, SETTING, fingerprint={}, folder="/nonexistent", key=None, batch_size=1
        )
    with pytest.raises(ValueError, match="grid='fitted' is fitted to a model by `--mode eval`"):
        time_grid(VPSDE(), 5, grid="fitted")
