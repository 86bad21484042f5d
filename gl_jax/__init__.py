"""gl_jax: generative learning in JAX.

Score-based and diffusion models first, with GANs, VAEs and autoregressive transformers beside them, all
trained by one shared, compiled, device-sharded training step. Import what you need from the submodules:
`gl_jax.sde`, `gl_jax.losses.score`, `gl_jax.samplers`, `gl_jax.models`, `gl_jax.train`, `gl_jax.data`.
"""

__version__ = "0.1.0"
