"""Pictures people would rather look at than numbers: sample grids, scatter plots, loss curves."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
from PIL import Image

from gl_jax import files

__all__ = [
    "scatter_limits",
    "image_grid",
    "captioned_grids",
    "save_image_grid",
    "save_scatter",
    "save_loss_curve",
    "save_metric_curve",
    "save_curves",
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


def captioned_grids(
    panels: list[tuple[str, np.ndarray]], *, caption: str, scale: int | None = None
) -> np.ndarray:
    """Image grids side by side under a caption, each with its label: e.g. `[("data", real), ("samples",
    x)]` with caption "step 2000 | euler_maruyama, 500 steps | 500 NFE | EMA parameters".

    Args:
      panels: (label, images `[N, H, W, C]` in [-1, 1]) pairs; the grids are enlarged by one integer
        factor (nearest), so every pixel stays a square of the same size.
      caption: the line above the panels.
      scale: the enlargement; default: about 256 pixels per grid side.

    Returns:
      The picture, RGB uint8 `[rows, cols, 3]`.
    """
    from PIL import ImageDraw, ImageFont

    grids = [image_grid(images) for _, images in panels]
    side = max(max(g.shape[:2]) for g in grids)
    scale = scale or max(1, 256 // side)
    font = ImageFont.load_default(size=14)
    line, gap = 20, 12
    tiles = []
    for (label, _), grid in zip(panels, grids, strict=True):
        tile = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).convert("RGB")
        tiles.append((label, tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST)))
    width = sum(t.width for _, t in tiles) + gap * (len(tiles) + 1)
    width = max(width, int(font.getlength(caption)) + 2 * gap)
    height = 2 * line + max(t.height for _, t in tiles) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 2), caption, fill="black", font=font)
    x = gap
    for label, tile in tiles:
        draw.text((x, line + 2), label, fill="dimgray", font=font)
        canvas.paste(tile, (x, 2 * line))
        x += tile.width + gap
    return np.asarray(canvas)


def _save_array(path: str | os.PathLike, picture: np.ndarray, metadata: dict[str, str] | None = None) -> None:
    """Writes an RGB array atomically; `metadata` becomes PNG text chunks (`tEXt`/`iTXt`)."""
    info = None
    if metadata and _format(path) == "png":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in metadata.items():
            info.add_itxt(key, value)
    with files.atomic_open(path) as f:
        Image.fromarray(picture).save(f, format=_format(path), pnginfo=info)


def _figure_array(fig) -> np.ndarray:
    """A drawn matplotlib figure as RGB uint8 `[rows, cols, 3]`."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


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


def save_scatter(
    path: str | os.PathLike | None,
    points: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    caption: str = "",
    metadata: dict[str, str] | None = None,
) -> np.ndarray:
    """Scatter plot of 2-D points (first two coordinates), with optional reference data behind them and a
    caption above; written to `path` (unless None; `metadata` as PNG text chunks) and returned as RGB uint8
    `[rows, cols, 3]`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    if caption:
        ax.set_title(caption, fontsize=9)
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=2, c="lightgray", label="data")
    low, high = scatter_limits(points if reference is None else reference)
    # Samples beyond the axes (a diverging sampler, an untrained model) are counted in the legend.
    xy = np.asarray(points, np.float64)[:, :2]
    outside = int(np.sum(~np.all((xy >= low) & (xy <= high), axis=1)))
    label = f"samples ({outside} of {len(xy)} outside the axes)" if outside else "samples"
    ax.scatter(points[:, 0], points[:, 1], s=2, c="tab:blue", label=label)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal")
    ax.legend(loc="upper right")
    fig.tight_layout()
    picture = _figure_array(fig)
    plt.close(fig)
    if path is not None:
        _save_array(path, picture, metadata)
    return picture


def save_samples(
    path: str | os.PathLike | None,
    samples: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    caption: str = "",
    metadata: dict[str, str] | None = None,
) -> np.ndarray:
    """The picture of samples, written to `path` (unless None, with `metadata` as PNG text chunks) and
    returned (RGB uint8): for images
    `[N, H, W, C]`, their grid beside a grid of `reference` images (the data) under `caption`; for vectors
    `[N, D]`, a scatter plot over the `reference` points."""
    samples = np.asarray(samples)
    if samples.ndim != 4:
        return save_scatter(path, samples, reference=reference, caption=caption, metadata=metadata)
    panels = [("samples", samples)]
    if reference is not None and len(reference):
        panels.insert(0, ("data", np.asarray(reference)[: len(samples)]))
    picture = captioned_grids(panels, caption=caption)
    if path is not None:
        _save_array(path, picture, metadata)
    return picture


def _labelled_axes(*, xlabel: str, ylabel: str, title: str = ""):
    """A 6x4-inch figure with one gridded axis, labelled; returns `(pyplot, figure, axis)`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return plt, fig, ax


def save_loss_curve(
    path: str | os.PathLike,
    steps: np.ndarray,
    losses: np.ndarray,
    *,
    eval_steps: np.ndarray | None = None,
    eval_losses: np.ndarray | None = None,
) -> None:
    """Training loss against step (with a moving average over ~1/50 of the run), and eval loss points."""
    steps, losses = np.asarray(steps), np.asarray(losses)
    plt, fig, ax = _labelled_axes(xlabel="step", ylabel="loss")
    ax.plot(steps, losses, lw=0.8, alpha=0.4, label="loss")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"moving average ({window})")
    if eval_steps is not None and len(eval_steps):
        ax.plot(eval_steps, eval_losses, "o-", ms=4, label="eval loss (EMA)")
    ax.set_yscale("log" if np.all(losses > 0) else "linear")
    ax.legend()
    _save_figure(fig, path)
    plt.close(fig)


def save_metric_curve(
    path: str | os.PathLike,
    x: np.ndarray,
    y: np.ndarray,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> np.ndarray:
    """One metric against one setting (e.g. FID against the post-hoc EMA width), its best point marked.

    Returns:
      The picture as RGB uint8 `[rows, cols, 3]` (for TensorBoard).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    plt, fig, ax = _labelled_axes(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.plot(x, y, "o-", ms=4)
    if np.isfinite(y).any():
        best = int(np.nanargmin(y))
        ax.plot(x[best], y[best], "r*", ms=12, label=f"lowest: {y[best]:.4g} at {x[best]:g}")
        ax.legend()
    picture = _figure_array(fig)
    _save_figure(fig, path)
    plt.close(fig)
    return picture


def save_curves(
    path: str | os.PathLike,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    reference: tuple[float, str] | None = None,
) -> None:
    """Several named curves on one axis (e.g. FID against training minutes, one line per sampler).

    Args:
      path: the picture's file; written atomically.
      curves: `{label: (x [N], y [N])}`, drawn in sorted label order.
      xlabel: the x axis' label.
      ylabel: the y axis' label.
      title: the figure's title.
      reference: `(y, label)` of a dashed horizontal line (e.g. the FID of held-out real images).
    """
    plt, fig, ax = _labelled_axes(xlabel=xlabel, ylabel=ylabel, title=title)
    for label in sorted(curves):
        x, y = curves[label]
        ax.plot(np.asarray(x, np.float64), np.asarray(y, np.float64), "o-", ms=4, label=label)
    if reference is not None:
        ax.axhline(reference[0], color="gray", ls="--", lw=1, label=reference[1])
    ax.legend()
    _save_figure(fig, path)
    plt.close(fig)
