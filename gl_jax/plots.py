"""Pictures people would rather look at than numbers: sample grids, scatter plots, loss curves."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from gl_jax import files

__all__ = [
    "scatter_limits",
    "image_grid",
    "save_image_grid",
    "save_scatter",
    "save_loss_curve",
    "save_samples",
]


def image_grid(images: np.ndarray, *, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles images `[N, H, W, C]` in [-1, 1] into one uint8 image `[rows*(H+pad)+pad, ..., C]`."""
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w
        ] = (img + 1.0) / 2.0
    return (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image_grid(path: str | os.PathLike, images: np.ndarray, *, scale: int | None = None) -> None:
    """Writes a PNG grid of images in [-1, 1]; small images are enlarged (nearest) to be seen."""
    grid = image_grid(images)
    scale = scale or max(1, 256 // max(images.shape[1], 1) // 2)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with files.atomic_open(path) as f:
        img.save(f, format=_format(path))


def _format(path: str | os.PathLike) -> str:
    """The image format a file name asks for (PNG when it names none)."""
    return os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"


def _save_figure(fig, path: str | os.PathLike) -> None:
    """Writes a matplotlib figure atomically (a reader never sees half a picture)."""
    with files.atomic_open(path) as f:
        fig.savefig(f, format=_format(path), dpi=100, bbox_inches="tight")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_limits(points: np.ndarray, *, margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Axis limits `(low [2], high [2])` that show the bulk of `points` `[N, D]` (first two coordinates):
    the 1st to 99th percentile widened by `margin` of its span, so a few far outliers (a diverging
    sampler) cannot shrink the data to a dot. Non-finite points are ignored."""
    xy = np.asarray(points, np.float64)[:, :2]
    xy = xy[np.all(np.isfinite(xy), axis=1)]
    if len(xy) == 0:
        return np.full(2, -1.0), np.full(2, 1.0)
    low, high = np.percentile(xy, 1, axis=0), np.percentile(xy, 99, axis=0)
    pad = margin * np.maximum(high - low, 1e-6)
    return low - pad, high + pad


def save_scatter(path: str | os.PathLike, points: np.ndarray, *, reference: np.ndarray | None = None) -> None:
    """Scatter plot of 2-D points (first two coordinates), with optional reference data behind them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=2, c="lightgray", label="data")
    ax.scatter(points[:, 0], points[:, 1], s=2, c="tab:blue", label="samples")
    low, high = scatter_limits(points if reference is None else reference)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal")
    ax.legend(loc="upper right")
    _save_figure(fig, path)
    plt.close(fig)


def save_samples(
    path: str | os.PathLike, samples: np.ndarray, *, reference: np.ndarray | None = None
) -> None:
    """An image grid for image-shaped samples `[N, H, W, C]`, a scatter plot for vectors `[N, D]`."""
    samples = np.asarray(samples)
    if samples.ndim == 4:
        save_image_grid(path, samples)
    else:
        save_scatter(path, samples, reference=reference)


def save_loss_curve(
    path: str | os.PathLike,
    steps: np.ndarray,
    losses: np.ndarray,
    *,
    eval_steps: np.ndarray | None = None,
    eval_losses: np.ndarray | None = None,
) -> None:
    """Training loss against step (with a moving average over ~1/50 of the run), and eval loss points."""
    plt = _pyplot()
    steps, losses = np.asarray(steps), np.asarray(losses)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, losses, lw=0.8, alpha=0.4, label="loss")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"moving average ({window})")
    if eval_steps is not None and len(eval_steps):
        ax.plot(eval_steps, eval_losses, "o-", ms=4, label="eval loss (EMA)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if np.all(losses > 0) else "linear")
    ax.legend()
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)
