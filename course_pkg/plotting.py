"""Plotting helpers shared by the chapters: densities on a grid, samples, warped grids, images.

Every helper draws on the matplotlib ``Axes`` it is given (a new figure when ``ax`` is ``None``)
and returns that ``Axes``, so a chapter can lay out panels with ``plt.subplots`` and still add a
title or a legend afterwards. Functions of points take and return torch tensors of shape
``[N, 2]`` (the flow API's ``[batch, features]``); arrays handed to matplotlib are numpy.
Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

Bounds = tuple[tuple[float, float], tuple[float, float]]
PointMap = Callable[[Tensor], Tensor]

DEFAULT_BOUNDS: Bounds = ((-3.0, 3.0), (-3.0, 3.0))


class DensityGrid(NamedTuple):
    """A density evaluated at the centres of a regular grid of cells.

    ``x`` is ``[nx]`` and ``y`` is ``[ny]`` (cell centres); ``density`` is ``[ny, nx]`` with
    ``density[i, j] = p(x[j], y[i])`` (rows follow ``y``, as ``imshow`` expects).
    """

    x: np.ndarray
    y: np.ndarray
    density: np.ndarray
    bounds: Bounds

    @property
    def cell_area(self) -> float:
        """Area of one grid cell, ``dx * dy``."""
        (x_low, x_high), (y_low, y_high) = self.bounds
        return (x_high - x_low) / self.x.size * (y_high - y_low) / self.y.size

    @property
    def total_mass(self) -> float:
        """Midpoint-rule integral ``sum_ij p(x_j, y_i) dx dy``: about 1 when the grid covers the mass."""
        return float(self.density.sum() * self.cell_area)


def _axes(ax: Axes | None, figsize: tuple[float, float] = (4.0, 4.0)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _to_numpy(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _label(ax: Axes, title: str | None, labels: tuple[str, str] | None) -> None:
    if labels is not None:
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
    if title is not None:
        ax.set_title(title)


def cell_centres(low: float, high: float, num_cells: int) -> np.ndarray:
    """Centres of ``num_cells`` equal cells that tile ``[low, high]``."""
    width = (high - low) / num_cells
    return low + width * (np.arange(num_cells) + 0.5)


def density_grid(
    log_prob_fn: PointMap,
    bounds: Bounds = DEFAULT_BOUNDS,
    resolution: int = 200,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DensityGrid:
    """Evaluate ``exp(log_prob_fn(points))`` at the centres of a ``resolution x resolution`` grid.

    ``log_prob_fn`` maps ``[N, 2]`` points (on ``device``, of ``dtype``) to ``[N]`` log-densities,
    e.g. ``model.log_prob``. It runs without gradients.
    """
    (x_low, x_high), (y_low, y_high) = bounds
    x = cell_centres(x_low, x_high, resolution)
    y = cell_centres(y_low, y_high, resolution)
    grid_x, grid_y = np.meshgrid(x, y)  # [ny, nx] each
    points = torch.as_tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), dtype=dtype, device=device)
    with torch.no_grad():
        log_density = log_prob_fn(points)
    density = _to_numpy(log_density.exp()).astype(np.float64).reshape(grid_x.shape)
    return DensityGrid(x, y, density, bounds)


def plot_density_grid(
    log_prob_fn: PointMap,
    bounds: Bounds = DEFAULT_BOUNDS,
    resolution: int = 200,
    ax: Axes | None = None,
    cmap: str = "viridis",
    title: str | None = None,
    labels: tuple[str, str] | None = ("$x_1$", "$x_2$"),
    colorbar: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Axes:
    """Draw the density ``exp(log_prob_fn)`` on a grid over ``bounds`` as an image.

    The image's pixels are the grid cells of :func:`density_grid`, so ``ax.images[-1]`` holds the
    density values and ``ax.images[-1].get_extent()`` the bounds. Equal aspect.
    """
    ax = _axes(ax)
    grid = density_grid(log_prob_fn, bounds, resolution, device, dtype)
    _show_grid(ax, grid.density, bounds, cmap, "density" if colorbar else None)
    _label(ax, title, labels)
    return ax


def _show_grid(ax: Axes, values: np.ndarray, bounds: Bounds, cmap: str, colorbar_label: str | None,
               vmin: float | None = None) -> None:
    """``values`` on grid cells over ``bounds`` as an equal-aspect image, with a colour bar if labelled."""
    (x_low, x_high), (y_low, y_high) = bounds
    image = ax.imshow(values, origin="lower", extent=(x_low, x_high, y_low, y_high), cmap=cmap, vmin=vmin,
                      interpolation="nearest")
    ax.set_aspect("equal")
    if colorbar_label is not None:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)


def plot_samples(
    samples: Tensor | np.ndarray,
    ax: Axes | None = None,
    bounds: Bounds | None = None,
    color: str = "C0",
    size: float = 2.0,
    alpha: float = 0.5,
    title: str | None = None,
    labels: tuple[str, str] | None = ("$x_1$", "$x_2$"),
    label: str | None = None,
) -> Axes:
    """Scatter ``[N, 2]`` samples with equal aspect; ``bounds`` fixes the limits when given."""
    points = _to_numpy(samples)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"plot_samples expects [N, 2] points, got shape {points.shape}")
    ax = _axes(ax)
    ax.scatter(points[:, 0], points[:, 1], s=size, alpha=alpha, color=color, linewidths=0, label=label)
    if bounds is not None:
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
    ax.set_aspect("equal")
    _label(ax, title, labels)
    return ax


def grid_lines(bounds: Bounds, num_lines: int = 11, resolution: int = 100) -> list[Tensor]:
    """The lines of a regular grid over ``bounds``, each ``[resolution, 2]`` (float64).

    ``num_lines`` vertical lines (constant ``x_1``) come first, then ``num_lines`` horizontal ones.
    """
    (x_low, x_high), (y_low, y_high) = bounds
    along_x = torch.linspace(x_low, x_high, resolution, dtype=torch.float64)
    along_y = torch.linspace(y_low, y_high, resolution, dtype=torch.float64)
    lines = [torch.stack([torch.full_like(along_y, x), along_y], dim=1) for x in np.linspace(x_low, x_high, num_lines)]
    lines += [torch.stack([along_x, torch.full_like(along_x, y)], dim=1) for y in np.linspace(y_low, y_high, num_lines)]
    return lines


def boundary(bounds: Bounds, resolution: int = 100) -> Tensor:
    """The closed boundary of the rectangle ``bounds``, counter-clockwise: ``[4 * resolution + 1, 2]``."""
    (x_low, x_high), (y_low, y_high) = bounds
    t = torch.linspace(0, 1, resolution + 1, dtype=torch.float64)[:-1]
    corners = torch.tensor([[x_low, y_low], [x_high, y_low], [x_high, y_high], [x_low, y_high]], dtype=torch.float64)
    sides = [corners[k] + t[:, None] * (corners[(k + 1) % 4] - corners[k]) for k in range(4)]
    return torch.cat(sides + [corners[:1]])


def polygon_area(vertices: Tensor | np.ndarray) -> float:
    """Signed area of a polygon ``[n, 2]`` by the shoelace formula (positive when counter-clockwise)."""
    points = _to_numpy(vertices).astype(np.float64)
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _apply(map_fn: PointMap, points: Tensor, dtype: torch.dtype, device: torch.device | str) -> np.ndarray:
    with torch.no_grad():
        return _to_numpy(map_fn(points.to(device=device, dtype=dtype))).astype(np.float64)


def plot_warped_grid(
    map_fn: PointMap,
    bounds: Bounds = ((-1.0, 1.0), (-1.0, 1.0)),
    num_lines: int = 11,
    resolution: int = 100,
    ax: Axes | None = None,
    color: str = "C0",
    linewidth: float = 1.0,
    fill: bool = False,
    fill_alpha: float = 0.25,
    title: str | None = None,
    labels: tuple[str, str] | None = ("$z_1$", "$z_2$"),
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Axes:
    """Draw how ``map_fn`` bends a regular grid over ``bounds``: each grid line ``L`` becomes ``map_fn(L)``.

    ``map_fn`` maps ``[N, 2]`` points to ``[N, 2]`` points (pass ``lambda p: flow(p)[0]`` for a
    flow). The lines are drawn in the order of :func:`grid_lines`, so ``ax.lines[k]`` is the image
    of the ``k``-th line. With ``fill`` the image of the whole rectangle is shaded. Equal aspect.
    Pass the identity to draw the grid itself.
    """
    ax = _axes(ax)
    for line in grid_lines(bounds, num_lines, resolution):
        image = _apply(map_fn, line, dtype, device)
        ax.plot(image[:, 0], image[:, 1], color=color, linewidth=linewidth)
    if fill:
        outline = _apply(map_fn, boundary(bounds, resolution), dtype, device)
        ax.fill(outline[:, 0], outline[:, 1], color=color, alpha=fill_alpha, linewidth=0)
    ax.set_aspect("equal")
    _label(ax, title, labels)
    return ax


def image_grid(images: Tensor | np.ndarray, num_columns: int = 8, padding: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile ``[N, H, W]`` or ``[N, C, H, W]`` images (C = 1 or 3) into one picture, row by row.

    Image ``k`` sits at row ``k // num_columns`` and column ``k % num_columns``, its top-left pixel
    at ``(padding + r (H + padding), padding + c (W + padding))``. Returns ``[rows, cols]`` for
    one channel, ``[rows, cols, 3]`` for three; empty places are ``pad_value``.
    """
    array = _to_numpy(images).astype(np.float64)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"image_grid expects [N, H, W] or [N, C, H, W] with C = 1 or 3, got {array.shape}")
    count, channels, height, width = array.shape
    num_columns = max(1, min(num_columns, count))
    num_rows = -(-count // num_columns)
    canvas = np.full(
        (channels, padding + num_rows * (height + padding), padding + num_columns * (width + padding)), pad_value
    )
    for k in range(count):
        top = padding + (k // num_columns) * (height + padding)
        left = padding + (k % num_columns) * (width + padding)
        canvas[:, top : top + height, left : left + width] = array[k]
    return canvas[0] if channels == 1 else canvas.transpose(1, 2, 0)


def plot_image_grid(
    images: Tensor | np.ndarray,
    num_columns: int = 8,
    ax: Axes | None = None,
    cmap: str = "gray",
    value_range: tuple[float, float] = (0.0, 1.0),
    padding: int = 1,
    title: str | None = None,
) -> Axes:
    """Show images ``[N, H, W]`` or ``[N, C, H, W]`` as one tiled picture (see :func:`image_grid`).

    Pixel values are clipped to ``value_range``, which maps to black and white.
    """
    low, high = value_range
    picture = np.clip(image_grid(images, num_columns, padding, pad_value=high), low, high)
    ax = _axes(ax, figsize=(6.0, 6.0))
    ax.imshow(picture if picture.ndim == 2 else (picture - low) / (high - low), cmap=cmap, vmin=low, vmax=high)
    ax.set_xticks([])
    ax.set_yticks([])
    _label(ax, title, None)
    return ax


def plot_density_1d(
    samples: Tensor | np.ndarray,
    density_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    bounds: tuple[float, float] | None = None,
    bins: int = 50,
    ax: Axes | None = None,
    color: str = "C0",
    title: str | None = None,
    labels: tuple[str, str] | None = ("$x$", "density"),
    sample_label: str = "histogram of samples",
    density_label: str = "formula",
) -> Axes:
    """A normalised histogram of 1-D ``samples`` with the curve ``density_fn`` on top.

    The bars are ``np.histogram(samples, bins, bounds, density=True)``; ``density_fn`` maps a numpy
    array of points to their densities.
    """
    values = _to_numpy(samples).ravel()
    ax = _axes(ax, figsize=(5.0, 3.5))
    low, high = bounds if bounds is not None else (float(values.min()), float(values.max()))
    ax.hist(values, bins=bins, range=(low, high), density=True, color=color, alpha=0.45, label=sample_label)
    if density_fn is not None:
        points = np.linspace(low, high, 400)
        ax.plot(points, density_fn(points), color="black", linewidth=1.5, label=density_label)
    ax.legend(loc="best", fontsize="small")
    _label(ax, title, labels)
    return ax


__all__ = [
    "DensityGrid",
    "boundary",
    "cell_centres",
    "density_grid",
    "grid_lines",
    "image_grid",
    "plot_density_1d",
    "plot_density_grid",
    "plot_image_grid",
    "plot_samples",
    "plot_warped_grid",
    "polygon_area",
]


# ------------------------------------------------------------------ matrices (chapter 2: Jacobians)


def plot_matrix(
    matrix: Tensor | np.ndarray,
    ax: Axes | None = None,
    cmap: str = "RdBu_r",
    title: str | None = None,
    cell_lines: bool = True,
) -> Axes:
    """Draw a matrix ``[m, n]`` as a picture, one square cell per entry, row 0 at the top as printed.

    The colour scale is symmetric about zero, which is white: a structural zero (above the
    diagonal of a lower-triangular Jacobian, off the diagonal of an elementwise one) is white
    wherever it sits, and the hue gives an entry's sign. ``ax.images[-1]`` holds the values.
    With ``cell_lines`` (and at most 40 rows and columns) thin grey lines separate the cells.
    No ticks; equal aspect.
    """
    values = _to_numpy(matrix).astype(np.float64)
    if values.ndim != 2:
        raise ValueError(f"plot_matrix expects a 2-D matrix, got shape {values.shape}")
    ax = _axes(ax, figsize=(3.0, 3.0))
    limit = float(np.abs(values).max()) or 1.0
    ax.imshow(values, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    rows, columns = values.shape
    if cell_lines and max(rows, columns) <= 40:
        ax.set_xticks(np.arange(-0.5, columns, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
        ax.grid(which="minor", color="0.8", linewidth=0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.tick_params(which="both", length=0)
    ax.set_aspect("equal")
    _label(ax, title, None)
    return ax


__all__ += ["plot_matrix"]


# ------------------------------------------------------ log densities and coloured points (chapter 3)


def plot_log_density_grid(
    log_prob_fn: PointMap,
    bounds: Bounds = DEFAULT_BOUNDS,
    resolution: int = 200,
    ax: Axes | None = None,
    floor: float = -8.0,
    cmap: str = "magma",
    title: str | None = None,
    labels: tuple[str, str] | None = ("$x_1$", "$x_2$"),
    colorbar: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Axes:
    """Draw ``log10`` of the density ``exp(log_prob_fn)`` on a grid over ``bounds``, clipped below at ``floor``.

    A linear colour scale hides everything a few orders of magnitude below the peak; on this one
    a thin bridge of mass between two modes, or a light tail, stays visible. The pixels are the
    grid cells of :func:`density_grid`; ``ax.images[-1]`` holds ``max(log10 p, floor)`` and its
    extent is ``bounds``. Equal aspect.
    """
    ax = _axes(ax)
    (x_low, x_high), (y_low, y_high) = bounds
    x = cell_centres(x_low, x_high, resolution)
    y = cell_centres(y_low, y_high, resolution)
    grid_x, grid_y = np.meshgrid(x, y)
    points = torch.as_tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), dtype=dtype, device=device)
    with torch.no_grad():
        log_density = log_prob_fn(points)
    # log10 from the log-density itself, so that densities below float range still get their value
    log10_density = _to_numpy(log_density).astype(np.float64).reshape(grid_x.shape) / np.log(10)
    _show_grid(ax, np.maximum(log10_density, floor), bounds, cmap, "$\\log_{10}$ density" if colorbar else None,
               vmin=floor)
    _label(ax, title, labels)
    return ax


def plot_colored_samples(
    samples: Tensor | np.ndarray,
    values: Tensor | np.ndarray,
    ax: Axes | None = None,
    bounds: Bounds | None = None,
    cmap: str = "coolwarm",
    size: float = 2.0,
    alpha: float = 0.7,
    title: str | None = None,
    labels: tuple[str, str] | None = ("$x_1$", "$x_2$"),
) -> Axes:
    """Scatter ``[N, 2]`` points coloured by ``values`` ``[N]`` (a colour map over their range), equal aspect.

    Colour points by where they came from (a coordinate of the data, a mode's label) and then draw
    their images ``z = f(x)`` with the same ``values``: the colours show where each part of the
    data went. ``ax.collections[-1]`` holds the points and their values.
    """
    points, colours = _to_numpy(samples), _to_numpy(values).ravel()
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"plot_colored_samples expects [N, 2] points, got shape {points.shape}")
    if colours.shape[0] != points.shape[0]:
        raise ValueError(
            f"plot_colored_samples needs one value per point: {points.shape[0]} points, {colours.shape[0]} values"
        )
    ax = _axes(ax)
    ax.scatter(points[:, 0], points[:, 1], c=colours, cmap=cmap, s=size, alpha=alpha, linewidths=0)
    if bounds is not None:
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
    ax.set_aspect("equal")
    _label(ax, title, labels)
    return ax


__all__ += ["plot_colored_samples", "plot_log_density_grid"]
