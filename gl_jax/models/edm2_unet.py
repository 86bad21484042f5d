"""EDM2's magnitude-preserving U-Net (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", CVPR; config G of table 1, figure 21).

Every layer is built so that unit-magnitude inputs give unit-magnitude outputs in expectation, where the
magnitude of an array is the root mean square of its entries and inputs are assumed uncorrelated:

  * a convolution or linear layer divides each output row of its weight by the row's magnitude and by
    sqrt(fan_in) (equation 47), so every output is a unit-norm combination of unit-magnitude inputs;
  * the stored weights are themselves kept on that sphere ("forced weight normalization", equation 66),
    so Adam's steps change their direction at a rate that does not decay as the weights grow;
  * SiLU is divided by 0.596, its output magnitude on N(0, 1) inputs (equation 81);
  * a residual sum ((1 - t) a + t b) / sqrt((1 - t)^2 + t^2) (equation 88) and a skip concatenation
    weighted by t and its channel counts (equation 103) keep magnitude 1 for uncorrelated unit inputs;
  * the noise level enters as cos(2 pi (f c_noise + phi)) sqrt(2) with f ~ N(0, 1), phi ~ U(0, 1)
    (equation 75), whose magnitude is 1;
  * activations are pixel-normalised (unit magnitude over channels) at the start of each encoder block,
    and q, k, v per head before attention ("cosine attention");
  * there are no biases and no group norms; the only non-unit gains are learned scalars initialised to 0
    (the output layer's, and each block's embedding gain, which starts every block unmodulated).

The network F is `MPUNet`; `EDM2UNet` wraps it in EDM's preconditioning (Karras et al. 2022), c_noise =
ln(sigma) / 4, which is what a config names as model "edm2". Named sizes come from the single table
`VARIANTS` (`EDM2UNet.from_variant(name, **overrides)`).

Where this differs from the reference implementation (NVlabs/edm2, `training/networks_edm2.py`):

  * Forced weight normalisation is a pure function of the parameters, `normalize_weights`, applied after
    each optimizer update (or as the last link of an optax chain, `forced_weight_normalization`), not an
    in-place rewrite at the start of every training forward pass. Weights are initialised on the sphere,
    so normalising after each update gives the same sequence of weights as normalising before each
    forward. The projection divides each row by its magnitude exactly; the reference's additive epsilon
    (1e-4) would leave stored rows at magnitude 1 / (1 + 1e-4). The forward pass keeps the additive form.
  * The random Fourier frequencies and phases are constants drawn by numpy from the field `fourier_seed`
    (as in `gl_jax.losses.weightings.UncertaintyWeight`), not parameters, so the parameter count is the
    reference's, and no optimizer (weight decay included) can move them.
  * The learned log-variance head of the reference's preconditioning is not part of the network: it is
    `gl_jax.losses.weightings.UncertaintyWeight`, trained by
    `gl_jax.losses.score.uncertainty_weighted_score_matching`.
  * Arrays are NHWC and weights are [kh, kw, in, out] (rows are the last axis). A block asked to attend
    with fewer than `channels_per_head` channels raises instead of silently skipping attention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gl_jax.models.layers import NamedSizes, check_resolutions
from gl_jax.models.preconditioning import edm_denoiser

__all__ = [
    "EDM2UNet",
    "ForcedWeightNormState",
    "MPBlock",
    "MPConv",
    "MPFourier",
    "MPUNet",
    "VARIANTS",
    "forced_weight_normalization",
    "mp_cat",
    "mp_normalize",
    "mp_silu",
    "mp_sum",
    "normalize_weights",
    "pixel_norm",
]

_IMG512 = dict(channel_mults=(1, 2, 3, 4), num_res_blocks=3, attention_resolutions=(16, 8), num_classes=1000)

# Every named size, decoded in one place. Sources:
#   edm2-img512-*: the ImageNet-512 presets of Karras et al. 2024 (NVlabs/edm2 `train_edm2.py`, table 2):
#     64x64x4 latents, channels 128-448, dropout 0.1 from M up; channel multipliers 1-2-3-4, 3 blocks per
#     resolution, attention at 16x16 and 8x8, 1000 classes (the reference `UNet`'s defaults).
#   edm2-cifar10-small: ours, for 32x32 images on a CPU (no published counterpart).
#   edm2-tiny: ours, the smallest network with every kind of block (8x8 images, attention at 4x4).
VARIANTS: dict[str, dict[str, Any]] = {
    "edm2-img512-xs": dict(_IMG512, channels=128, dropout=0.0),
    "edm2-img512-s": dict(_IMG512, channels=192, dropout=0.0),
    "edm2-img512-m": dict(_IMG512, channels=256, dropout=0.1),
    "edm2-img512-l": dict(_IMG512, channels=320, dropout=0.1),
    "edm2-img512-xl": dict(_IMG512, channels=384, dropout=0.1),
    "edm2-img512-xxl": dict(_IMG512, channels=448, dropout=0.1),
    "edm2-cifar10-small": dict(
        channels=32, channel_mults=(1, 2, 2), num_res_blocks=2, attention_resolutions=(16, 8)
    ),
    "edm2-tiny": dict(
        channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,), channels_per_head=16
    ),
}

# SiLU's output magnitude on N(0, 1) inputs, sqrt(E[silu(x)^2]), to the reference's three digits.
_SILU_MAGNITUDE = 0.596


# --- magnitude-preserving operations -------------------------------------------------------------------


def mp_normalize(x: jax.Array, axis: int | Sequence[int], *, eps: float = 1e-4) -> jax.Array:
    """x / (eps + rms(x)), the root mean square taken over `axis` (Karras et al. 2024, equation 47).

    Args:
      x: any array.
      axis: the axes whose entries are normalised together (a weight's fan-in axes, or the channels).
      eps: keeps all-zero slices finite.

    Returns:
      x scaled to unit magnitude along `axis`, in x's dtype (the norm is computed in float32).
    """
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    x32 = x.astype(jnp.float32)
    rms = jnp.sqrt(jnp.mean(jnp.square(x32), axis=axes, keepdims=True))
    return (x32 / (eps + rms)).astype(x.dtype)


def pixel_norm(x: jax.Array, *, eps: float = 1e-4) -> jax.Array:
    """Unit magnitude over the channels of each pixel of `[..., C]` features (the last axis)."""
    return mp_normalize(x, -1, eps=eps)


def mp_silu(x: jax.Array) -> jax.Array:
    """silu(x) / 0.596, SiLU with unit output magnitude on N(0, 1) inputs (Karras et al. 2024, eq. 81)."""
    return nn.silu(x) / _SILU_MAGNITUDE


def mp_sum(a: jax.Array, b: jax.Array, t: float = 0.5) -> jax.Array:
    """((1 - t) a + t b) / sqrt((1 - t)^2 + t^2) (Karras et al. 2024, equation 88).

    Args:
      a: the main branch.
      b: the branch blended in, broadcastable with a.
      t: the weight of b (EDM2: 0.3 for residual and attention branches, 0.5 for the label embedding).

    Returns:
      The blend, of magnitude 1 when a and b are uncorrelated with magnitude 1.
    """
    return ((1.0 - t) * a + t * b) / math.sqrt((1.0 - t) ** 2 + t**2)


def mp_cat(a: jax.Array, b: jax.Array, *, t: float = 0.5, axis: int = -1) -> jax.Array:
    """Concatenation weighted by t that keeps unit magnitude (Karras et al. 2024, equation 103).

    With Na and Nb channels and C = sqrt((Na + Nb) / ((1 - t)^2 + t^2)), a is scaled by C (1 - t) / sqrt(Na)
    and b by C t / sqrt(Nb): each part contributes in proportion (1 - t)^2 : t^2 to the magnitude,
    whatever its width.

    Args:
      a: the first part (EDM2: the decoder's features).
      b: the second part (EDM2: the encoder's skip connection).
      t: the weight of b.
      axis: the axis to concatenate along.

    Returns:
      `[..., Na + Nb]` features of magnitude 1 when the parts have magnitude 1.
    """
    na, nb = a.shape[axis], b.shape[axis]
    c = math.sqrt((na + nb) / ((1.0 - t) ** 2 + t**2))
    return jnp.concatenate([a * (c * (1.0 - t) / math.sqrt(na)), b * (c * t / math.sqrt(nb))], axis=axis)


# --- forced weight normalisation -------------------------------------------------------------------------


def _is_mp_weight(path: tuple, leaf: Any) -> bool:
    last = path[-1] if path else None
    return getattr(last, "key", None) == "weight" and getattr(leaf, "ndim", 0) >= 2


def _unit_rows(w: jax.Array) -> jax.Array:
    """Each output row (last axis) scaled to magnitude exactly 1 (a zero row stays zero)."""
    fan_in_axes = tuple(range(w.ndim - 1))
    rms = jnp.sqrt(jnp.mean(jnp.square(w.astype(jnp.float32)), axis=fan_in_axes, keepdims=True))
    return (w / jnp.where(rms > 0, rms, 1.0)).astype(w.dtype)


def normalize_weights(params: Any) -> Any:
    """Forced weight normalisation: every `MPConv` weight row put back on the unit-magnitude sphere.

    Apply after each optimizer update (Karras et al. 2024, equation 66): the rows then have
    norm sqrt(fan_in), the forward pass's own normalisation is the identity up to its epsilon, and the
    effective learning rate does not decay as the weights would otherwise grow.

    Args:
      params: a parameter tree; its leaves named "weight" with two or more axes (the weights of `MPConv`,
        rows along the last axis) are normalised, every other leaf is returned as it is.

    Returns:
      The tree with each weight row w replaced by w / rms(w).
    """
    return jax.tree_util.tree_map_with_path(lambda p, x: _unit_rows(x) if _is_mp_weight(p, x) else x, params)


class ForcedWeightNormState(NamedTuple):
    """`forced_weight_normalization` keeps no state."""


def forced_weight_normalization() -> optax.GradientTransformation:
    """`normalize_weights` as the last link of an optax chain.

    The update it returns takes the parameters to `normalize_weights(params + updates)`, so
    `optax.chain(optax.adam(lr), forced_weight_normalization())` trains EDM2 with forced weight
    normalisation inside an ordinary optax train step.

    Returns:
      An `optax.GradientTransformation` whose `update` needs `params`.

    References:
      Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", eq. 66.
    """

    def init(params: Any) -> ForcedWeightNormState:
        del params
        return ForcedWeightNormState()

    def update(updates: Any, state: ForcedWeightNormState, params: Any = None):
        if params is None:
            raise ValueError("forced_weight_normalization needs the parameters: call update(g, s, params).")
        target = normalize_weights(optax.apply_updates(params, updates))
        return jax.tree.map(lambda new, old: new - old, target, params), state

    return optax.GradientTransformation(init, update)


# --- layers --------------------------------------------------------------------------------------------


def _unit_normal(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    # N(0, 1), then each row exactly on the sphere that `normalize_weights` keeps it on.
    return _unit_rows(jax.random.normal(key, shape, dtype))


class MPConv(nn.Module):
    """Magnitude-preserving convolution (a kernel) or linear layer (no kernel), without bias.

    y = x * (gain w_hat / sqrt(fan_in)) with w_hat = `mp_normalize(w)` per output row (Karras et al. 2024,
    equation 47). The stored weight `weight` `[*kernel_size, C_in, features]` is drawn N(0, 1) with unit
    magnitude rows; `normalize_weights` keeps it so during training.

    Attributes:
      features: output channels.
      kernel_size: () for a linear layer on `[B, C_in]`, (k, k) with odd k for a 'same' convolution on
        `[B, H, W, C_in]`.
      dtype: computation dtype; the weight is normalised in float32.
    """

    features: int
    kernel_size: Sequence[int] = ()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, gain: float | jax.Array = 1.0) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        w = self.param("weight", _unit_normal, shape)
        fan_in_axes = tuple(range(w.ndim - 1))
        w = mp_normalize(w, fan_in_axes)
        w = w * (gain / math.sqrt(math.prod(shape[:-1])))
        dtype = self.dtype or x.dtype
        x, w = x.astype(dtype), w.astype(dtype)
        if not self.kernel_size:
            return x @ w  # [B, features]
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )  # [B, H, W, features]


class MPFourier(nn.Module):
    """Magnitude-preserving Fourier features of a scalar: cos(2 pi (f x + phi)) sqrt(2) (Karras et al. 2024,
    equation 75), f ~ N(0, bandwidth^2), phi ~ U(0, 1), fixed constants drawn from `seed` (no parameters).

    For any x, the features' magnitude over random f and phi is 1: E[2 cos^2(u)] = 1 for u uniform.

    Attributes:
      features: number of features.
      bandwidth: standard deviation of the frequencies.
      seed: numpy seed of the frequencies and phases.
    """

    features: int
    bandwidth: float = 1.0
    seed: int = 0

    def constants(self) -> tuple[np.ndarray, np.ndarray]:
        """The frequencies and phases `[features]` each, float32."""
        rng = np.random.default_rng(self.seed)
        freqs = self.bandwidth * rng.standard_normal(self.features)
        phases = rng.uniform(size=self.features)
        return freqs.astype(np.float32), phases.astype(np.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps `[B]` inputs to `[B, features]` features of unit magnitude."""
        freqs, phases = self.constants()
        y = x.astype(jnp.float32)[:, None] * freqs[None, :] + phases[None, :]  # [B, features]
        return jnp.cos(2.0 * math.pi * y) * math.sqrt(2.0)


def _downsample(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape  # The [1, 1] filter: a 2 x 2 box average.
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # The [1, 1] filter: nearest neighbour.


class MPBlock(nn.Module):
    """EDM2's encoder or decoder block with optional cosine self-attention (Karras et al. 2024, figure 21).

    Encoder ("enc"): resample, 1x1 convolution when the width changes, pixel norm; decoder ("dec"):
    resample, and the 1x1 convolution after the residual branch. The residual branch is conv3x3(mp_silu(x)),
    modulated by 1 + gain emb_linear(emb) (gain initialised to 0), mp_silu, dropout, conv3x3, joined by
    `mp_sum`; then optional attention with q, k, v pixel-normalised per head, joined by `mp_sum`; then
    clipping.

    Attributes:
      features: output channels.
      flavor: "enc" or "dec".
      resample: "keep", "down" (2 x 2 average) or "up" (nearest neighbour).
      num_heads: attention heads of `features // num_heads` channels each; 0 for no attention.
      dropout: dropout rate in the residual branch (rng stream "dropout", only when train=True).
      res_balance: `mp_sum` weight of the residual branch.
      attn_balance: `mp_sum` weight of the attention branch.
      clip_act: clip the output to [-clip_act, clip_act]; None for no clipping.
      dtype: computation dtype; attention logits and softmax are float32.
    """

    features: int
    flavor: str = "enc"
    resample: str = "keep"
    num_heads: int = 0
    dropout: float = 0.0
    res_balance: float = 0.3
    attn_balance: float = 0.3
    clip_act: float | None = 256.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, *, train: bool = False) -> jax.Array:
        """`[B, H, W, C_in]` features and `[B, E]` embedding -> `[B, H', W', features]`."""
        conv = lambda n, k, name: MPConv(n, k, dtype=self.dtype, name=name)
        c = self.features
        if self.resample == "down":
            x = _downsample(x)
        elif self.resample == "up":
            x = _upsample(x)
        if self.flavor == "enc":
            if x.shape[-1] != c:
                x = conv(c, (1, 1), "conv_skip")(x)
            x = pixel_norm(x)

        y = conv(c, (3, 3), "conv_res0")(mp_silu(x))
        emb_gain = self.param("emb_gain", nn.initializers.zeros, ())
        scale = conv(c, (), "emb_linear")(emb, gain=emb_gain) + 1.0  # [B, C]
        y = mp_silu(y * scale[:, None, None, :].astype(y.dtype))
        if self.dropout:
            y = nn.Dropout(self.dropout)(y, deterministic=not train)
        y = conv(c, (3, 3), "conv_res1")(y)
        if self.flavor == "dec" and x.shape[-1] != c:
            x = conv(c, (1, 1), "conv_skip")(x)
        x = mp_sum(x, y, t=self.res_balance)

        if self.num_heads:
            b, hgt, wid, _ = x.shape
            heads = self.num_heads
            # Channels of the qkv projection are ordered [heads, C / heads, 3], as in the reference.
            qkv = conv(3 * c, (1, 1), "attn_qkv")(x).reshape(b, hgt * wid, heads, c // heads, 3)
            qkv = mp_normalize(qkv, 3)  # Cosine attention: unit q, k, v per head and pixel.
            q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]  # [B, T, heads, C / heads]
            logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32)
            w = jax.nn.softmax(logits / math.sqrt(c // heads), axis=-1).astype(v.dtype)  # [B, heads, T, T]
            a = jnp.einsum("bhqk,bkhc->bqhc", w, v).reshape(b, hgt, wid, c)
            x = mp_sum(x, conv(c, (1, 1), "attn_proj")(a), t=self.attn_balance)

        if self.clip_act is not None:
            x = jnp.clip(x, -self.clip_act, self.clip_act)
        return x


# --- the networks --------------------------------------------------------------------------------------


class MPUNet(NamedSizes, nn.Module):
    """EDM2's U-Net F: `apply({"params": p}, x, cond, y=None, *, train=False) -> [B, H, W, C]`.

    x is `[B, H, W, C]` with H, W divisible by 2^(len(channel_mults) - 1); cond is the `[B]` noise
    conditioning (EDM2: c_noise = ln(sigma) / 4); y is an optional `[B]` int label, embedded as the one-hot
    vector times sqrt(num_classes). The label `num_classes`, y=None and a dropped label give the zero vector
    (unconditional). With `train=True`, dropout and label dropout draw from the rng stream "dropout". The
    output is float32, shaped like x, and zero at initialisation (the output gain starts at 0).

    Attributes:
      channels: base channel count (the reference's `model_channels`).
      channel_mults: channel multiplier per resolution; resolution i has size H / 2^i.
      num_res_blocks: blocks per resolution in the encoder (one more in the decoder).
      attention_resolutions: spatial sizes whose blocks attend (the lowest resolution's first decoder
        block always does).
      channels_per_head: attention head width.
      num_classes: number of class labels, 0 = unconditional.
      label_dropout: probability of dropping a label in training (classifier-free guidance).
      dropout: dropout rate in the residual branches.
      noise_channels: Fourier features of cond (default channels * channel_mults[0]).
      emb_channels: embedding width (default channels * max(channel_mults)).
      fourier_bandwidth: standard deviation of the Fourier frequencies.
      fourier_seed: numpy seed of the Fourier frequencies and phases (constants, not parameters).
      res_balance: `mp_sum` weight of each residual branch (0.3).
      attn_balance: `mp_sum` weight of each attention branch (0.3).
      concat_balance: `mp_cat` weight of the skip connections (0.5).
      label_balance: `mp_sum` weight of the label embedding against the noise embedding (0.5).
      clip_act: clip block outputs to this magnitude (256), None for no clipping.
      dtype: computation dtype (e.g. jnp.bfloat16); parameters are float32.
    """

    channels: int = 192
    channel_mults: Sequence[int] = (1, 2, 3, 4)
    num_res_blocks: int = 3
    attention_resolutions: Sequence[int] = (16, 8)
    channels_per_head: int = 64
    num_classes: int = 0
    label_dropout: float = 0.0
    dropout: float = 0.0
    noise_channels: int | None = None
    emb_channels: int | None = None
    fourier_bandwidth: float = 1.0
    fourier_seed: int = 0
    res_balance: float = 0.3
    attn_balance: float = 0.3
    concat_balance: float = 0.5
    label_balance: float = 0.5
    clip_act: float | None = 256.0
    dtype: Any = None

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = VARIANTS
    # The training step must put the weight rows back on the sphere after each update: the family's
    # optimizer ends its chain with `forced_weight_normalization()` when the network says so.
    forced_weight_norm: ClassVar[bool] = True

    @nn.compact
    def __call__(
        self, x: jax.Array, cond: jax.Array, y: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        return self._unet(x, cond, y, train)

    def _embedding(self, cond: jax.Array, y: jax.Array | None, train: bool) -> jax.Array:
        """`[B]` noise conditioning and labels -> `[B, emb_channels]`."""
        widths = [self.channels * m for m in self.channel_mults]
        cnoise = self.noise_channels or widths[0]
        cemb = self.emb_channels or max(widths)
        fourier = MPFourier(cnoise, self.fourier_bandwidth, self.fourier_seed, name="emb_fourier")
        emb = MPConv(cemb, dtype=self.dtype, name="emb_noise")(fourier(cond))  # [B, cemb]
        if self.num_classes:
            if y is None:
                y = jnp.full(cond.shape, self.num_classes, jnp.int32)  # The null label.
            if train and self.label_dropout:
                drop = jax.random.bernoulli(self.make_rng("dropout"), self.label_dropout, y.shape)  # [B]
                y = jnp.where(drop, self.num_classes, y)
            # one_hot gives the zero vector for the null label num_classes.
            onehot = jax.nn.one_hot(y, self.num_classes) * math.sqrt(self.num_classes)  # [B, classes]
            label = MPConv(cemb, dtype=self.dtype, name="emb_label")(onehot)
            emb = mp_sum(emb, label, t=self.label_balance)
        elif y is not None:
            raise ValueError("Labels y were given to an unconditional network (num_classes=0).")
        return mp_silu(emb)

    def _block(
        self, name: str, features: int, flavor: str, *, resample: str = "keep", attention: bool = False
    ):
        heads = features // self.channels_per_head if attention else 0
        if attention and not heads:
            raise ValueError(
                f"Block {name} attends with {features} channels, fewer than channels_per_head="
                f"{self.channels_per_head}; lower channels_per_head or attend at other resolutions."
            )
        return MPBlock(
            features,
            flavor=flavor,
            resample=resample,
            num_heads=heads,
            dropout=self.dropout,
            res_balance=self.res_balance,
            attn_balance=self.attn_balance,
            clip_act=self.clip_act,
            dtype=self.dtype,
            name=name,
        )

    def _unet(self, x: jax.Array, cond: jax.Array, y: jax.Array | None, train: bool) -> jax.Array:
        """The whole network; a method of its own so `EDM2UNet` can wrap it."""
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects images [B, H, W, C], got shape {x.shape}.")
        if cond.shape != x.shape[:1]:
            raise ValueError(f"cond must have shape [B] = {x.shape[:1]}, got {cond.shape}.")
        check_resolutions(x.shape[1:3], self.channel_mults)
        emb = self._embedding(cond, y, train)  # [B, E]
        widths = [self.channels * m for m in self.channel_mults]
        size = x.shape[1]

        # Encoder. A constant channel gives the first convolution a position-independent input (zero
        # padding then marks the border), as in the reference.
        h = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)  # [B, H, W, C + 1]
        skips = []
        for level, width in enumerate(widths):
            res = size >> level
            if level == 0:
                h = MPConv(width, (3, 3), dtype=self.dtype, name=f"enc{res}_conv")(h)
            else:
                h = self._block(f"enc{res}_down", h.shape[-1], "enc", resample="down")(h, emb, train=train)
            skips.append(h)
            for i in range(self.num_res_blocks):
                attend = res in self.attention_resolutions
                h = self._block(f"enc{res}_block{i}", width, "enc", attention=attend)(h, emb, train=train)
                skips.append(h)

        # Decoder.
        for level in reversed(range(len(widths))):
            width, res = widths[level], size >> level
            if level == len(widths) - 1:
                h = self._block(f"dec{res}_in0", h.shape[-1], "dec", attention=True)(h, emb, train=train)
                h = self._block(f"dec{res}_in1", h.shape[-1], "dec")(h, emb, train=train)
            else:
                h = self._block(f"dec{res}_up", h.shape[-1], "dec", resample="up")(h, emb, train=train)
            for i in range(self.num_res_blocks + 1):
                h = mp_cat(h, skips.pop(), t=self.concat_balance)
                attend = res in self.attention_resolutions
                h = self._block(f"dec{res}_block{i}", width, "dec", attention=attend)(h, emb, train=train)

        out_gain = self.param("out_gain", nn.initializers.zeros, ())
        out = MPConv(x.shape[-1], (3, 3), dtype=self.dtype, name="out_conv")(h, gain=out_gain)
        return out.astype(jnp.float32)


class EDM2UNet(MPUNet):
    """EDM2's preconditioned U-Net: `apply({"params": p}, x, sigma, y=None, *, train=False) -> D(x; sigma)`.

    D = c_skip x + c_out F(c_in x; c_noise, y) with c_noise = ln(sigma) / 4 (Karras et al. 2022, table 1;
    `gl_jax.models.preconditioning.edm_denoiser`) and F the `MPUNet` (all its fields and `VARIANTS`). x is
    `[B, H, W, C]` noisy data x_0 + sigma eps, sigma is `[B]`; D, the denoised estimate of x_0, is float32
    and shaped like x. In a diffusion config: `model.name = "edm2"`, `loss.prediction = "x0"`,
    `loss.noise_cond = "sigma"`.

    Attributes (in addition to `MPUNet`'s):
      sigma_data: standard deviation of the data (0.5 in EDM2, for latents and pixels alike).
    """

    sigma_data: float = 0.5

    @nn.compact
    def __call__(
        self, x: jax.Array, sigma: jax.Array, y: jax.Array | None = None, *, train: bool = False
    ) -> jax.Array:
        raw = lambda x_in, c_noise: self._unet(x_in, c_noise, y, train)
        return edm_denoiser(raw, x, sigma, sigma_data=self.sigma_data)
