"""gl_jax: generative learning in JAX.

Score-based and diffusion models first, with GANs, VAEs and autoregressive transformers beside them, all
trained by one shared, compiled, device-sharded training step. Import what you need from the submodules:
`gl_jax.sde`, `gl_jax.losses.score`, `gl_jax.samplers`, `gl_jax.models`, `gl_jax.train`, `gl_jax.data`;
`gl_jax.load_run(workdir)` loads a trained run for your own code.
"""

__version__ = "0.1.0"

__all__ = ["load_run", "__version__"]


def __getattr__(name: str):
    # `import gl_jax` stays light: the run loader (JAX, flax, orbax) is imported on first use.
    if name == "load_run":
        from gl_jax.trained import load_run

        return load_run
    raise AttributeError(f"module 'gl_jax' has no attribute {name!r}")
