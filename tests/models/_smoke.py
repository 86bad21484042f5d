"""Shared helpers for the model tests: cheap compilation, parameter counts from shapes, smoke steps."""

import jax
import jax.numpy as jnp
import numpy as np

KEY = jax.random.key(0, impl="rbg")  # rbg: cheaper to compile on CPU than threefry


def fast_jit(fun, **kwargs):
    """`jax.jit` with little XLA optimisation: for these tiny programs compiling, not running, is the cost."""
    return jax.jit(fun, compiler_options={"xla_backend_optimization_level": 0}, **kwargs)


def num_params(model, shape, *args) -> int:
    """Parameter count from shapes alone (`jax.eval_shape`: nothing is allocated or compiled)."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    cond = jax.ShapeDtypeStruct(shape[:1], jnp.float32)
    params = jax.eval_shape(model.init, KEY, x, cond, *args)
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def random_params(model, *args, scale: float = 0.1):
    """Parameters shaped like `model.init(KEY, *args)`'s, drawn from N(0, scale^2) by numpy.

    Compiling a network's initialiser costs more than its forward pass on CPU, so the smoke tests use
    these; the published initialisation is tested on its own.
    """
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(model.init, KEY, *args)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def smoke(model, *, num_classes: int = 0, channel_factor: int = 1) -> None:
    """Forward on [2, 8, 8, 1] and [2, 32, 32, 3], and one training-mode gradient of a mean-square loss on
    the first; everything finite and shaped as expected (`channel_factor` times the input's channels).

    `model` is called as `model.apply(params, x, cond[, y], train=..., rngs=...)`; with `num_classes` it gets
    labels.
    """
    cond = jnp.array([0.3, 2.0])
    extra = (jnp.array([0, num_classes - 1]),) if num_classes else ()
    small = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    params = random_params(model, small, cond, *extra)

    def loss(p):
        rngs = {"dropout": jax.random.key(2, impl="rbg")}
        out = model.apply(p, small, cond, *extra, train=True, rngs=rngs)
        return jnp.mean((out - 1.0) ** 2), out

    (value, out), grads = fast_jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert out.shape == (2, 8, 8, channel_factor) and np.isfinite(value)
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(g).all() for g in leaves) and any(np.abs(g).max() > 0 for g in leaves)

    big = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
    out = fast_jit(model.apply)(random_params(model, big, cond, *extra), big, cond, *extra)
    assert out.shape == (2, 32, 32, 3 * channel_factor) and np.isfinite(out).all()
