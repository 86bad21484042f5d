"""Samples drawn one at a time over the mesh (`parallel.compile_sampler`) keep a class-conditional model's
classes: sample i is of class i % num_classes, as in `sample_counted`'s rows."""

import jax
import numpy as np

from gl_jax.spec import DataSpec
from gl_jax.train.experiment import Experiment
from tests.conftest import load_config


def test_mesh_sampler_cycles_through_the_classes():
    config = load_config("digits_vp_cond", "smoke")
    config.sample.steps = 3
    # One level without attention and no guidance (one network call per step): the classes' path is the
    # same, the compiles are a third as long.
    config.model.update(channel_mults=(1,), attention_resolutions=())
    config.sample.guidance = 1.0
    run = Experiment(
        config,
        load_train=False,
        spec=DataSpec("sklearn_digits", "image", (8, 8, 1), 17, 10, {}),
    )
    params = run.init_state().ema_params
    # Random weights everywhere (the label embedding and last layer start at zero): labels matter.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(
        tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )
    key = jax.random.key(0)
    x, _ = run.sample_fn(params, key, 12)
    one = jax.jit(lambda k, label: run.family.sample_conditional(params, k, label).x[0])
    for i in (0, 3, 11):
        want = one(jax.random.fold_in(key, i), np.array([i % 10], np.int32))
        np.testing.assert_allclose(x[i], want, atol=1e-4)  # Batched vs single: rounding.
    other = one(jax.random.fold_in(key, 3), np.array([4], np.int32))
    assert np.abs(x[3] - other).max() > 1e-3  # Another class's sample from the same noise differs.
