"""A noise-conditional image classifier for classifier guidance (Dhariwal & Nichol 2021, section 4).

The encoder half of the U-Net (noise embedding, down path, middle block; `UNetEncoder`) followed by
GroupNorm, SiLU, global average pooling and a linear head. Guided sampling adds
s * grad_x log p(y | x_t, t) to the score (`gl_jax.samplers.conditional.classifier_guided_score`, whose
`log_prob_fn` is `log_softmax` of these logits); the classifier must be trained on noised data with the
same `cond` convention as the diffusion model's.
Dhariwal & Nichol pool with attention; average pooling keeps the head free of resolution-specific
parameters.

Library-only: no family trains a classifier and no experiment uses one. Train it in your own code
(cross-entropy of the labels on noised data, `cond` as the diffusion model's) and pass it to
`classifier_guided_score`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gl_jax.models.layers import group_norm
from gl_jax.models.unet import UNetEncoder

__all__ = ["NoisyClassifier", "VARIANTS"]

# Encoder sizes. The CIFAR-10 entry is the DDPM++ encoder at half width (the ADM classifiers are the
# encoder of their U-Net at reduced width and depth).
VARIANTS: dict[str, dict[str, Any]] = {
    "ddpmpp-cifar10": dict(
        channels=64,
        channel_mults=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16,),
        dropout=0.1,
        resblock="biggan",
        skip_rescale=True,
    ),
    "tiny": dict(
        channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4, 16), dropout=0.1
    ),
}


class NoisyClassifier(UNetEncoder):
    """Noisy-image classifier: `apply({"params": p}, x, cond, *, train=False) -> logits [B, num_classes]`.

    x is `[B, H, W, C]`, cond the `[B]` noise conditioning (same convention as the U-Net's). Dropout uses
    the rng stream "dropout" when `train=True`.

    Attributes (in addition to `UNetEncoder`'s):
      num_classes: number of output classes.
    """

    num_classes: int = 10

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = VARIANTS

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array, *, train: bool = False) -> jax.Array:
        self._check(x, cond)
        temb = self._noise_embedding(cond)  # [B, 4 channels]
        h, _ = self._encode(x, temb, train)  # [B, h, w, C]
        h = nn.silu(group_norm(h.shape[-1], dtype=self.dtype, name="norm_out")(h))
        h = h.mean(axis=(1, 2))  # [B, C]
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(h)  # [B, num_classes]
        return logits.astype(jnp.float32)
