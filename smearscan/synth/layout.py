"""Where the WBCs of a synthetic field go.

Three kinds of placement, in this order (which is also the drawing order):

1. border cells: one cell centred exactly on each tile-border line ``x = v``
   or ``y = v`` (the line passes through the cell's centre, so the cell
   straddles the two tiles);
2. touching pairs: cell ``B`` is put against cell ``A`` so that their outlines
   overlap by 0.2-0.6 µm (at least one pixel) along the line of centres; ``B``
   is drawn on top, and the pair is re-drawn elsewhere until ``B`` covers no
   pixel of ``A``'s nucleus;
3. free cells, anywhere fully inside the field; planted blasts (if any) are
   the last free cells.

A crowded field that cannot be laid out is laid out again from scratch a few
times before :class:`~smearscan.errors.ConfigError` is raised.

Cells that are not partners keep a gap of at least 1.5 µm + 2 px between
their outermost outline points, so only the planned pairs touch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from smearscan.errors import ConfigError
from smearscan.synth.blasts import make_blast_shape
from smearscan.synth.cells import (
    WbcPatch,
    WbcShape,
    draw_cell_types,
    make_wbc_shape,
    render_wbc,
)
from smearscan.synth.shapes import radius_along
from smearscan.synth.stain import StainStyle

logger = logging.getLogger(__name__)

_MAX_TRIES = 400
_LAYOUT_TRIES = 8


@dataclass
class WbcPlacement:
    """One planned WBC.

    Attributes:
        shape: Its geometry.
        x: Centre column, pixels.
        y: Centre row, pixels.
        patch: The cell rendered at ``(x, y)``.
        border_line: ``"x=V"`` or ``"y=V"`` when centred on a tile-border line, else None.
        partner: Index (in the placement list) of the cell it was made to touch, else None.
    """

    shape: WbcShape
    x: float
    y: float
    patch: WbcPatch
    border_line: str | None = None
    partner: int | None = None


@dataclass
class _Context:
    rng: np.random.Generator
    width: int
    height: int
    pixel_size_um: float
    style: StainStyle
    gap_px: float

    def clear(self, x: float, y: float, r: float, placed: list[WbcPlacement]) -> bool:
        """Whether a disc of radius ``r`` at ``(x, y)`` keeps the gap to every placed cell."""
        return all(
            np.hypot(p.x - x, p.y - y) >= r + p.shape.max_radius_px + self.gap_px for p in placed
        )

    def inside(self, x: float, y: float, r: float) -> bool:
        """Whether a disc of radius ``r`` at ``(x, y)`` lies inside the field (1 px margin)."""
        return r + 1 <= x <= self.width - 1 - r and r + 1 <= y <= self.height - 1 - r

    def random_inside(self, r: float) -> tuple[float, float] | None:
        """A uniform centre keeping a disc of radius ``r`` inside, or None if it cannot fit."""
        if 2 * (r + 1) >= min(self.width, self.height):
            return None
        x = self.rng.uniform(r + 1, self.width - 1 - r)
        y = self.rng.uniform(r + 1, self.height - 1 - r)
        return float(x), float(y)

    def render(self, shape: WbcShape, x: float, y: float) -> WbcPatch:
        """Render ``shape`` centred at ``(x, y)`` with the field's style."""
        return render_wbc(shape, x, y, self.style, self.pixel_size_um)


def plan_wbcs(
    rng: np.random.Generator,
    width: int,
    height: int,
    pixel_size_um: float,
    style: StainStyle,
    n_wbc: int,
    n_pairs: int,
    border_lines: list[tuple[str, int]],
    n_blasts: int = 0,
) -> list[WbcPlacement]:
    """Choose types, shapes and positions of all WBCs of a field.

    Args:
        rng: Random generator.
        width: Field width, pixels.
        height: Field height, pixels.
        pixel_size_um: Pixel size, micrometres per pixel.
        style: Stain style (the cells are rendered during placement).
        n_wbc: Number of WBCs.
        n_pairs: Number of touching pairs (``2 * n_pairs <= n_wbc``).
        border_lines: ``(axis, value)`` lines (``"x"`` or ``"y"``, pixels) that
            get one cell centred on them, as far as ``n_wbc`` allows.
        n_blasts: Number of blasts planted as extra free cells (beyond ``n_wbc``).
            Their shapes are drawn after the normal ones, so with 0 the random
            stream, hence the field, is that of a generator without blasts.

    Returns:
        The placements in drawing order.

    Raises:
        ConfigError: When the cells do not fit in the field.
    """
    ctx = _Context(rng, width, height, pixel_size_um, style, 1.5 / pixel_size_um + 2.0)
    shapes = [make_wbc_shape(rng, t, pixel_size_um) for t in draw_cell_types(rng, n_wbc)]
    shapes += [make_blast_shape(rng, pixel_size_um) for _ in range(n_blasts)]
    n_lines = min(len(border_lines), n_wbc - 2 * n_pairs)
    if n_lines < len(border_lines):
        logger.warning(
            "only %d of %d border lines get a WBC (n_wbc=%d, n_touching_pairs=%d)",
            n_lines,
            len(border_lines),
            n_wbc,
            n_pairs,
        )
    error: ConfigError | None = None
    for _ in range(_LAYOUT_TRIES):
        try:
            return _layout(ctx, shapes, n_pairs, border_lines[:n_lines])
        except ConfigError as exc:  # crowded: start the layout again with fresh positions
            error = exc
    raise ConfigError(f"{error} (after {_LAYOUT_TRIES} layouts)")


def _layout(
    ctx: _Context, shapes: list[WbcShape], n_pairs: int, lines: list[tuple[str, int]]
) -> list[WbcPlacement]:
    """One layout attempt: border cells, then pairs, then free cells."""
    placed: list[WbcPlacement] = []
    for shape, line in zip(shapes, lines, strict=False):
        placed.append(_place_on_line(ctx, shape, line, placed))
    rest = shapes[len(lines) :]
    for p in range(n_pairs):
        placed.extend(_place_pair(ctx, rest[2 * p], rest[2 * p + 1], placed))
    for shape in rest[2 * n_pairs :]:
        placed.append(_place_free(ctx, shape, placed))
    return placed


def _place_free(ctx: _Context, shape: WbcShape, placed: list[WbcPlacement]) -> WbcPlacement:
    """A cell anywhere fully inside the field, clear of the placed ones."""
    r = shape.max_radius_px
    for _ in range(_MAX_TRIES):
        pos = ctx.random_inside(r)
        if pos is None:
            break
        if ctx.clear(pos[0], pos[1], r, placed):
            return WbcPlacement(shape, pos[0], pos[1], ctx.render(shape, *pos))
    raise ConfigError(
        f"could not place {len(placed) + 1} WBCs in a {ctx.width}x{ctx.height} px field at "
        f"{ctx.pixel_size_um} µm/px; lower n_wbc or enlarge the field"
    )


def _place_on_line(
    ctx: _Context, shape: WbcShape, line: tuple[str, int], placed: list[WbcPlacement]
) -> WbcPlacement:
    """A cell centred exactly on a tile-border line ``(axis, value)``."""
    axis, value = line
    r = shape.max_radius_px
    length = ctx.height if axis == "x" else ctx.width
    if 2 * (r + 1) < length:
        for _ in range(_MAX_TRIES):
            along = float(ctx.rng.uniform(r + 1, length - 1 - r))
            x, y = (float(value), along) if axis == "x" else (along, float(value))
            if ctx.clear(x, y, r, placed):
                patch = ctx.render(shape, x, y)
                return WbcPlacement(shape, x, y, patch, border_line=f"{axis}={value}")
    raise ConfigError(
        f"could not centre a WBC on the border line {axis}={value} of a {ctx.width}x{ctx.height} "
        "px field; use fewer WBCs or other border_positions_px"
    )


def _place_pair(
    ctx: _Context, a: WbcShape, b: WbcShape, placed: list[WbcPlacement]
) -> list[WbcPlacement]:
    """Two cells, ``b`` drawn over ``a`` with a slight overlap (see module doc)."""
    ra, rb = a.max_radius_px, b.max_radius_px
    for _ in range(_MAX_TRIES):
        pos = ctx.random_inside(ra)
        if pos is None or not ctx.clear(pos[0], pos[1], ra, placed):
            continue
        angle = float(ctx.rng.uniform(0.0, 2.0 * np.pi))
        overlap = max(1.0, float(ctx.rng.uniform(0.2, 0.6)) / ctx.pixel_size_um)
        dist = radius_along(a.radii_px, angle) + radius_along(b.radii_px, angle + np.pi) - overlap
        bx, by = pos[0] + dist * np.cos(angle), pos[1] + dist * np.sin(angle)
        if not ctx.inside(bx, by, rb) or not ctx.clear(bx, by, rb, placed):
            continue
        pa, pb = ctx.render(a, *pos), ctx.render(b, bx, by)
        if _pair_ok(pa, pb):
            i = len(placed)
            return [
                WbcPlacement(a, pos[0], pos[1], pa, partner=i + 1),
                WbcPlacement(b, float(bx), float(by), pb, partner=i),
            ]
    raise ConfigError(
        f"could not place a touching WBC pair in a {ctx.width}x{ctx.height} px field; "
        "lower n_touching_pairs or n_wbc"
    )


def _pair_ok(under: WbcPatch, over: WbcPatch) -> bool:
    """Whether ``over`` (drawn later) touches ``under`` without covering its nucleus."""
    y0, x0 = max(under.y0, over.y0), max(under.x0, over.x0)
    y1 = min(under.y0 + under.cell.shape[0], over.y0 + over.cell.shape[0])
    x1 = min(under.x0 + under.cell.shape[1], over.x0 + over.cell.shape[1])
    if y0 >= y1 or x0 >= x1:
        return False
    su = (slice(y0 - under.y0, y1 - under.y0), slice(x0 - under.x0, x1 - under.x0))
    so = (slice(y0 - over.y0, y1 - over.y0), slice(x0 - over.x0, x1 - over.x0))
    over_cell = over.cell[so]
    if (under.nucleus[su] & over_cell).any():
        return False
    grown = cv2.dilate(over_cell.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    remaining = under.cell[su] & ~over_cell
    return bool((grown & remaining).any())
