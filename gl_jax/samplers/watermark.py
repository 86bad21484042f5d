"""Tree-Ring watermarks: a key in the Fourier spectrum of the starting noise, found again by inversion.

Wen et al. 2023 ("Tree-Ring Watermarks: Fingerprints for Diffusion Images that are Invisible and Robust")
write a key into a disc of low frequencies of the starting noise x_T's 2-D Fourier transform over the
image axes and sample from it with a deterministic sampler (DDIM). To check an image for the key, they run
the sampler backwards (DDIM inversion, `gl_jax.samplers.invert`) to recover x_T and compare its spectrum
with the key on the disc. The "rings" key is constant on rings about the zero frequency, so a rotation of
the image, which rotates its spectrum, keeps it; the paper argues that a pattern in Fourier space also
weathers convolutions (which scale each coefficient), crops and dilations better than one in pixel space.

The noise. Fourier coefficients here use the unitary ("ortho") DFT, F = FFT(x) / sqrt(H W), so N(0, I)
noise has coefficients of unit energy `E|F_k|^2 = 1`: complex Gaussians with independent real and imaginary
parts of variance 1/2 (real with variance 1 at the self-conjugate frequencies k = -k), F_{-k} the complex
conjugate of F_k. The key replaces the masked coefficients; the others keep the Gaussian's. The paper keeps
the real part of the inverse FFT, which leaves a ring's value real; we draw real ring values of unit
variance, so a watermarked coefficient has a Gaussian coefficient's energy and, by Parseval, the noise its
unit variance per pixel on average over keys. It is not N(0, I): a fixed key is a fixed low-frequency
component, and the coefficients of one ring are equal. Wen et al. (sec. 3.3) draw ring values from a
Gaussian so that the noise stays close to the one it replaces, and report a negligible loss in FID;
Ci et al. 2024 (RingID) show that this remaining shift itself helps detection. The
"rand" key (Tree-Ring_Rand) is the spectrum of another Gaussian sample on the disc, so over keys the noise
is exactly N(0, I) (the disc is symmetric under k -> -k), but it is not invariant to rotations.

The test (Wen et al. 2023, sec. 3.4). Under the null hypothesis (no key) the inverted noise is N(0, std^2 I)
(the prior), so on the disc M the spectrum y = FFT(x_T / std) holds as many independent real unit-variance
components as M has coefficients: Re and Im, times sqrt(2), for one of each pair k, -k, and Re at the
self-conjugate frequencies. The statistic `eta = sum_{k in M} |y_k - key_k|^2` counts each such component
once (the two coefficients of a pair carry the same `|y_k - key_k|^2`, half the sum of their two
components' squares), so under the null it follows the noncentral chi-squared law with df = size(M) degrees
of freedom and noncentrality `nc = sum_{k in M} |key_k|^2`. The p-value is `P(chi2_df(nc) <= eta)`: a
watermarked image inverts close to the key (small eta). The paper estimates the noise's scale from the
inverted latent and counts 2 size(M) components, both halves of each conjugate pair; with the prior's known
scale and each pair counted once the null law is exact, which `tests/samplers/test_watermark.py` checks by
simulation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammainc, gammaln, xlogy

from gl_jax.samplers.invert import invert
from gl_jax.sde import GaussianDiffusion

__all__ = [
    "PATTERNS",
    "TreeRing",
    "Detection",
    "tree_ring_key",
    "watermark_noise",
    "latent_statistic",
    "detect",
    "noncentral_chi2_cdf",
]

PATTERNS = ("rings", "rand", "zeros")
_IMAGE_AXES = (1, 2)  # [B, H, W, C]: the transform runs over H and W, per channel.


class TreeRing(NamedTuple):
    """A Tree-Ring key.

    Attributes:
      mask: `[H, W, C]` bool, the watermarked Fourier coefficients (unshifted DFT layout: frequency 0 at
        index 0), symmetric under k -> -k.
      pattern: `[H, W, C]` complex, the key's coefficients on the mask (0 elsewhere), Hermitian
        (pattern at -k is the conjugate of pattern at k), so that the watermarked noise is real.
    """

    mask: jax.Array
    pattern: jax.Array


class Detection(NamedTuple):
    """What `detect` returns.

    Attributes:
      statistic: `[B]` eta, the squared distance of the inverted noise's spectrum to the key on the mask.
      p_value: `[B]` P(eta' <= eta) for eta' under the null (no key); small means watermarked.
      z: `[B, H, W, C]` the inverted noise.
      nfe: score evaluations of the inversion.
    """

    statistic: jax.Array
    p_value: jax.Array
    z: jax.Array
    nfe: jax.Array


def _frequency_radius(height: int, width: int) -> np.ndarray:
    """The frequency norm `[H, W]` of each DFT coefficient in integer frequency units (unshifted layout)."""
    ky = np.fft.fftfreq(height) * height  # 0, 1, ..., -2, -1
    kx = np.fft.fftfreq(width) * width
    return np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)


def tree_ring_key(
    key: jax.Array,
    shape: tuple[int, int, int],
    *,
    radius: int,
    channel: int | None = None,
    pattern: str = "rings",
) -> TreeRing:
    """A random Tree-Ring key on the disc `|k| <= radius` of the image spectrum.

    Args:
      key: PRNG key of the key's values.
      shape: `(H, W, C)`, one image's shape (channels last).
      radius: the disc's radius in frequency units, 1 <= radius < min(H, W) / 2 (the paper: 10 on 64 x 64
        latents). The disc then leaves out the Nyquist frequencies, so it is symmetric under k -> -k.
      channel: the channel that carries the key (the paper: the last of Stable Diffusion's 4), or None
        for every channel.
      pattern: "rings" (Tree-Ring_Rings, the paper's choice): one real N(0, 1) value per ring
        `i - 1 < |k| <= i` (the zero frequency on the first), per channel; "rand" (Tree-Ring_Rand): the
        spectrum of a N(0, I) sample on the disc; "zeros" (Tree-Ring_Zeros): 0 on the disc.

    Returns:
      `TreeRing(mask, pattern)`, each `[H, W, C]`.
    """
    height, width, channels = shape
    if not 1 <= radius < min(height, width) / 2:
        raise ValueError(f"radius must be in [1, {min(height, width) / 2}), got {radius}.")
    if channel is not None and not 0 <= channel < channels:
        raise ValueError(f"channel must be in [0, {channels}) or None, got {channel}.")
    if pattern not in PATTERNS:
        raise ValueError(f"Unknown Tree-Ring pattern {pattern!r}; choose one of {PATTERNS}.")
    dist = _frequency_radius(height, width)  # [H, W]
    disc = dist <= radius
    chosen = np.arange(channels) == channel if channel is not None else np.ones(channels, bool)  # [C]
    mask = disc[:, :, None] & chosen[None, None, :]  # [H, W, C]
    if pattern == "rings":
        ring = np.maximum(np.ceil(dist), 1).astype(np.int32)  # [H, W]: ring i holds i - 1 < |k| <= i.
        values = jax.random.normal(key, (radius + 1, channels))  # [rings, C]; row 0 unused.
        full = values[np.minimum(ring, radius)].astype(jnp.complex64)  # [H, W, C]
    elif pattern == "rand":
        full = jnp.fft.fft2(jax.random.normal(key, (height, width, channels)), axes=(0, 1), norm="ortho")
    else:
        full = jnp.zeros((height, width, channels), jnp.complex64)
    mask = jnp.asarray(mask)
    return TreeRing(mask, jnp.where(mask, full, 0.0).astype(jnp.complex64))


def watermark_noise(key: jax.Array, shape: tuple[int, ...], wm: TreeRing, *, std: float = 1.0) -> jax.Array:
    """Starting noise `[B, H, W, C]` whose spectrum carries the key on its mask and is Gaussian elsewhere.

    Args:
      key: PRNG key of the Gaussian part.
      shape: `[B, H, W, C]`.
      wm: the key (`tree_ring_key` of `shape[1:]`).
      std: the prior's standard deviation, `sde.prior_std()` (about 1 for VP processes).

    Returns:
      `std * ifft(where(mask, key, fft(eps)))` for eps ~ N(0, I), real; pass it to a deterministic
      sampler as `x_init`.
    """
    if tuple(shape[1:]) != wm.mask.shape:
        raise ValueError(f"shape {tuple(shape)} does not match the key's {wm.mask.shape} per image.")
    eps = jax.random.normal(key, tuple(shape))  # [B, H, W, C]
    spectrum = jnp.where(wm.mask, wm.pattern, jnp.fft.fft2(eps, axes=_IMAGE_AXES, norm="ortho"))
    # The spectrum is Hermitian (mask and key are), so the imaginary part is rounding only.
    return std * jnp.real(jnp.fft.ifft2(spectrum, axes=_IMAGE_AXES, norm="ortho")).astype(eps.dtype)


def noncentral_chi2_cdf(x: jax.Array, df: Any, nc: Any, *, terms: int = 256) -> jax.Array:
    """P(X <= x) for X noncentral chi-squared with `df` degrees of freedom and noncentrality `nc`.

    The law is the Poisson(nc / 2) mixture of central chi-squared laws with df + 2j degrees of freedom
    (Johnson, Kotz & Balakrishnan 1995, "Continuous Univariate Distributions" vol. 2, eq. 29.2), so
    P(X <= x) = sum_j Poisson(j; nc / 2) P(df / 2 + j, x / 2), P the regularised lower incomplete gamma
    function. The sum runs over `terms` consecutive j centred on the Poisson mode; what it leaves out is the
    Poisson mass beyond terms / 2 from the mode, below 1e-12 while terms / 2 >= 8 sqrt(nc / 2) + 8 (nc up
    to about 450 with the default).

    Args:
      x: values, any shape.
      df: degrees of freedom (> 0).
      nc: noncentrality (>= 0); 0 gives the central law.
      terms: number of mixture terms.

    Returns:
      The CDF at `x`, shaped like `x`.
    """
    x = jnp.asarray(x)
    dtype = jnp.result_type(x.dtype, float)
    half_nc = jnp.asarray(nc, dtype) / 2.0
    first = jnp.maximum(jnp.floor(half_nc) - terms // 2, 0.0)
    j = first + jnp.arange(terms, dtype=dtype)  # [terms]
    log_weights = xlogy(j, half_nc) - gammaln(j + 1.0)  # log Poisson(j; nc / 2) + nc / 2
    # Normalised over the window rather than by exp(-nc / 2): the two agree to the omitted mass, and the
    # normalisation cancels the rounding of the large, nearly equal terms xlogy and gammaln in float32.
    weights = jax.nn.softmax(log_weights)
    central = gammainc(jnp.asarray(df, dtype) / 2.0 + j, jnp.maximum(x, 0.0)[..., None] / 2.0)  # [..., terms]
    return jnp.sum(weights * central, axis=-1)


def latent_statistic(
    z: jax.Array, wm: TreeRing, *, std: float = 1.0, terms: int = 256
) -> tuple[jax.Array, jax.Array]:
    """The Tree-Ring statistic and its p-value for noise `z` (the inverted starting noise).

    Args:
      z: `[B, H, W, C]` the noise at `sde.T`.
      wm: the key.
      std: the prior's standard deviation (`sde.prior_std()`), the noise's scale under the null.
      terms: terms of `noncentral_chi2_cdf`.

    Returns:
      `(statistic, p_value)`, each `[B]`: eta, the sum over the mask of `|FFT(z / std) - key|^2` (unitary
      DFT), and `P(chi2_df(nc) <= eta)` with df the mask's size and nc the sum over it of `|key|^2`.
    """
    if z.shape[1:] != wm.mask.shape:
        raise ValueError(f"z has shape {z.shape}, the key is for images {wm.mask.shape}.")
    spectrum = jnp.fft.fft2(z / std, axes=_IMAGE_AXES, norm="ortho")  # [B, H, W, C]
    sq = jnp.where(wm.mask, jnp.abs(spectrum - wm.pattern) ** 2, 0.0)
    statistic = jnp.sum(sq, axis=(1, 2, 3))  # [B]
    df = jnp.sum(wm.mask)
    nc = jnp.sum(jnp.where(wm.mask, jnp.abs(wm.pattern) ** 2, 0.0))
    return statistic, noncentral_chi2_cdf(statistic, df, nc, terms=terms)


def detect(
    score_fn: Any,
    sde: GaussianDiffusion,
    x: jax.Array,
    wm: TreeRing,
    *,
    steps: int = 50,
    method: str = "ddim",
    grid: str | jax.Array = "uniform",
    rho: float = 7.0,
    labels: Any = None,
    terms: int = 256,
) -> Detection:
    """Inverts images `x` to their starting noise and tests it for the key (Wen et al. 2023, sec. 3.4).

    Args:
      score_fn: the model's `score_fn(x, t)` on images `[B, H, W, C]` (or `score_fn(x, t, labels)`).
      sde: the forward process.
      x: `[B, H, W, C]` images.
      wm: the key.
      steps, method, grid, rho, labels: `invert`'s options (the paper: 50 DDIM steps, and an empty prompt
        in place of the unknown one).
      terms: terms of `noncentral_chi2_cdf`.

    Returns:
      `Detection(statistic, p_value, z, nfe)`.
    """
    inverted = invert(score_fn, sde, x, steps=steps, method=method, grid=grid, rho=rho, labels=labels)
    statistic, p_value = latent_statistic(inverted.z, wm, std=sde.prior_std(), terms=terms)
    return Detection(statistic, p_value, inverted.z, inverted.nfe)
