"""The train step compiled in a thread from the state's shapes is the step compiled from the state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gl_jax.train import parallel
from gl_jax.train.state import TrainState
from gl_jax.train.step import make_train_step


def _loss(params, batch, keys):
    del keys
    residual = batch["x"] @ params["w"] - batch["y"]  # [B]
    return jnp.mean(residual**2), {}


def test_background_compile_from_abstract_state_runs_the_same_step():
    mesh = parallel.make_mesh()
    tx = optax.adam(1e-2)
    create = lambda key: TrainState.create(params={"w": jax.random.normal(key, (3,))}, tx=tx)  # noqa: E731
    key = jax.random.key(0)
    sharding = parallel.state_shardings(jax.eval_shape(create, key), mesh)
    abstract = parallel.abstract_sharded(create, key, sharding)
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch(
        {"x": rng.normal(size=(8, 3)).astype(np.float32), "y": rng.normal(size=8).astype(np.float32)}, mesh
    )
    step_fn = parallel.compile_train_step(make_train_step(_loss), mesh, state_sharding=sharding)

    compiling = parallel.BackgroundCompile(step_fn, abstract, batch, key)  # Starts before the state exists.
    state = parallel.init_sharded(create, key, mesh, sharding)
    in_thread = compiling.result()
    assert compiling.seconds is not None and compiling.seconds > 0
    reference = parallel.init_sharded(create, key, mesh, sharding)
    direct = step_fn.lower(reference, batch, key).compile()
    for _ in range(3):
        state, metrics = in_thread(state, batch, key)
        reference, expected = direct(reference, batch, key)
        assert float(metrics["loss"]) == float(expected["loss"])
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.asarray(reference.params["w"]))


def test_background_compile_raises_in_the_caller():
    step_fn = jax.jit(lambda x: x @ x)  # A [3] and a [4] vector: no matmul.
    compiling = parallel.BackgroundCompile(step_fn, jax.ShapeDtypeStruct((3, 4), jnp.float32))
    with pytest.raises(TypeError):
        compiling.result()
