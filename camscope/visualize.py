"""Heat-map overlays and side-by-side comparison grids.

Figures are built with :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so this
module is safe to use from worker threads and never opens a window; files are rendered by the
Agg canvas and written atomically through :func:`camscope.io.save_figure`.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from camscope.io import save_figure

__all__ = ["GridRow", "colorize", "draw_box", "method_label", "overlay", "save_grid"]

_CELL_INCHES = 2.2  # side of one image cell
_GAP_INCHES = 0.1  # horizontal gap between cells and figure margin
_HEADER_INCHES = 0.4  # column headers at the top
_TITLE_INCHES = 0.3  # row title above each row
_NOTE_INCHES = 0.3  # room for notes under each row
_DPI = 100
_TITLE_CHARS = 90  # wrap/clip long row titles


def method_label(name: str) -> str:
    """The registered label of a method (``"gradcam"`` -> ``"Grad-CAM"``).

    Labels belong to the method registry (`camscope.methods.registry.METHODS`); a name that is
    not a registered method name comes back unchanged.
    """
    from camscope.methods import METHODS  # lazy: the methods package is heavy and imports models

    spec = METHODS.get(name)
    return name if spec is None else spec.label


@functools.lru_cache(maxsize=16)
def _lut(colormap: str) -> np.ndarray:
    """The colormap's lookup table as a read-only float64 array (N, 3) in 0..255."""
    cmap = matplotlib.colormaps[colormap]
    table = np.asarray(cmap(np.arange(cmap.N)), dtype=np.float64)[:, :3] * 255.0
    table.setflags(write=False)
    return table


def _colour_values(cam: np.ndarray, colormap: str) -> np.ndarray:
    """Map a 2-D array in [0, 1] to float RGB (H, W, 3) in 0..255, like ``cmap(cam)``.

    Values are clipped to [0, 1] (NaN counts as 0) and looked up exactly as matplotlib does
    for floats: index ``int(v * N)``, with 1.0 mapped to the last entry.
    """
    cam = np.asarray(cam)
    if cam.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {cam.shape}")
    table = _lut(colormap)
    n = table.shape[0]
    values = np.nan_to_num(cam.astype(np.float64, copy=False), nan=0.0)
    index = np.clip((np.clip(values, 0.0, 1.0) * n).astype(np.intp), 0, n - 1)
    return table[index]


def colorize(cam: np.ndarray, *, colormap: str = "jet") -> np.ndarray:
    """Colour a map in [0, 1] with a matplotlib colormap; uint8 (H, W, 3)."""
    return np.rint(_colour_values(cam, colormap)).astype(np.uint8)


def draw_box(
    rgb: np.ndarray, box: Sequence[float], caption: str = "", colour: tuple = (255, 255, 255)
) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with the box (x1, y1, x2, y2, pixels) and its caption drawn.

    A 2-pixel outline, the caption on a dark band inside the box's top edge (PIL's default
    font); a copy, the input is unchanged.
    """
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    x1, y1, x2, y2 = (float(v) for v in box)
    draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colour, width=2)
    if caption:
        left, top, right, bottom = draw.textbbox((x1 + 3, y1 + 2), caption)
        draw.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=(0, 0, 0))
        draw.text((x1 + 3, y1 + 2), caption, fill=colour)
    return np.asarray(image)


def overlay(
    rgb: np.ndarray, cam: np.ndarray, *, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend a coloured map over an image: ``round((1 - alpha) * rgb + alpha * colour)``.

    Args:
        rgb: uint8 image (H, W, 3).
        cam: float map (H, W), expected in [0, 1] (clipped; NaN counts as 0).
        alpha: weight of the colour, in [0, 1] (0 -> the image, 1 -> the coloured map).
        colormap: any name in :data:`matplotlib.colormaps` (default ``"jet"``).

    Returns:
        uint8 (H, W, 3).

    Raises:
        ValueError: on bad shapes, a non-uint8 image or alpha outside [0, 1].
    """
    rgb = np.asarray(rgb)
    cam = np.asarray(cam)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {rgb.dtype}")
    if cam.shape != rgb.shape[:2]:
        raise ValueError(f"map shape {cam.shape} does not match image shape {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colour = _colour_values(cam, colormap)
    blended = (1.0 - alpha) * rgb.astype(np.float64) + alpha * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


@dataclass
class GridRow:
    """One image (one row) of a comparison grid.

    Attributes:
        title: shown above the row, e.g. ``"tabby cat (p=0.83)"``.
        image: the input, uint8 (H, W, 3).
        overlays: method name -> overlay uint8 (H, W, 3), or ``None`` if that method failed
            for this image (a missing key is shown as "n/a").
        notes: method name (or ``"input"``) -> short note shown under that cell,
            e.g. ``{"scorecam": "empty map"}``.
    """

    title: str
    image: np.ndarray
    overlays: dict[str, np.ndarray | None]
    notes: dict[str, str] = field(default_factory=dict)


def _plain(text: str) -> str:
    """Escape ``$`` so matplotlib does not treat titles as mathtext."""
    return text.replace("$", r"\$")


def _draw_page(rows: Sequence[GridRow], methods: Sequence[str]) -> Figure:
    columns = ["input", *methods]
    ncols = len(columns)
    row_h = _TITLE_INCHES + _CELL_INCHES + _NOTE_INCHES
    width = ncols * _CELL_INCHES + (ncols + 1) * _GAP_INCHES
    height = _HEADER_INCHES + len(rows) * row_h
    fig = Figure(figsize=(width, height), dpi=_DPI, facecolor="white")

    for c, column in enumerate(columns):
        x_centre = (_GAP_INCHES + c * (_CELL_INCHES + _GAP_INCHES) + _CELL_INCHES / 2) / width
        label = "input" if column == "input" else method_label(column)
        fig.text(
            x_centre,
            1.0 - (_HEADER_INCHES / 2) / height,
            _plain(label),
            ha="center",
            va="center",
            fontsize=12,
            fontweight="bold",
        )

    for r, row in enumerate(rows):
        row_top = height - _HEADER_INCHES - r * row_h  # inches from the bottom
        title = textwrap.shorten(" ".join(str(row.title).split()), _TITLE_CHARS, placeholder="...")
        fig.text(
            0.5,
            (row_top - _TITLE_INCHES / 2) / height,
            _plain(title),
            ha="center",
            va="center",
            fontsize=10,
        )
        cell_bottom = row_top - _TITLE_INCHES - _CELL_INCHES
        for c, column in enumerate(columns):
            left = _GAP_INCHES + c * (_CELL_INCHES + _GAP_INCHES)
            ax = fig.add_axes(
                (left / width, cell_bottom / height, _CELL_INCHES / width, _CELL_INCHES / height)
            )
            _draw_cell(ax, row, column)
    return fig


def _draw_cell(ax: Any, row: GridRow, column: str) -> None:
    """One cell of the grid: the input or a method's overlay (or why none), and its note."""
    ax.set_axis_off()
    if column == "input":
        picture: np.ndarray | None = row.image
        missing = "no image"
    else:
        picture = row.overlays.get(column)
        missing = "failed" if column in row.overlays else "n/a"
    if picture is not None:
        ax.imshow(np.asarray(picture), interpolation="antialiased")
    else:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.add_patch(Rectangle((0, 0), 1, 1, facecolor="0.9", edgecolor="0.7", clip_on=False))
        ax.text(0.5, 0.5, missing, ha="center", va="center", fontsize=11, color="0.3")
    note = row.notes.get(column)
    if note:
        ax.text(
            0.5,
            -0.03,
            _plain(textwrap.shorten(" ".join(note.split()), 40, placeholder="...")),
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=8,
            color="0.25",
        )


def save_grid(
    out_dir: Path,
    rows: Sequence[GridRow],
    methods: Sequence[str],
    *,
    rows_per_file: int = 8,
    stem: str = "grid",
) -> list[Path]:
    """Save comparison grids: one row per image, columns ``input`` + one per method.

    Rows are split into pages of ``rows_per_file``: ``{stem}.png``, ``{stem}-2.png``,
    ``{stem}-3.png``... in *out_dir* (created if needed), each written atomically. Cells are
    about 2.2 inches at 100 dpi; failed methods (``None``) show a grey "failed" cell.

    Returns:
        The written paths, in page order (empty when *rows* is empty).
    """
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for page, start in enumerate(range(0, len(rows), rows_per_file), start=1):
        name = f"{stem}.png" if page == 1 else f"{stem}-{page}.png"
        path = out_dir / name
        fig = _draw_page(rows[start : start + rows_per_file], methods)
        save_figure(path, fig, dpi=_DPI, facecolor="white")
        paths.append(path)
    return paths
