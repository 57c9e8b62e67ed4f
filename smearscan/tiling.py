"""Tile geometry: the grid, the halo, blending weights and processing order.

Pure geometry: no I/O, no torch. All coordinates are pixels of the image the
model sees (the slide resampled to the model's input scale); ``y`` is the row,
``x`` the column, windows are half-open ``[start, stop)``.

Along each axis, a tile of length ``T`` starts at ``origin`` (which may be negative or run past
the image: the reader pads). Along one axis its pixels are:

``[0, halo)``                 context only, weight 0 (receptive-field margin)
``[halo, halo + overlap)``    raised-cosine ramp up, shared with the previous tile
``[halo + overlap, T - halo - overlap)``  weight 1
``[T - halo - overlap, T - halo)``  ramp down, shared with the next tile
``[T - halo, T)``             context only, weight 0

Tiles are spaced by ``stride = T - 2 * halo - overlap`` so that the ramp down
of one tile and the ramp up of the next cover the same pixels and sum to one.
The first tile starts at ``-(halo + overlap)``, so every image pixel receives
total weight exactly 1 and each pixel that gets weight from a tile lies at
least ``halo`` pixels inside it: with ``halo`` no smaller than the model's
receptive-field radius, blended tiled predictions equal whole-image ones.

For U-Net-like models (pooling), ``halo``, ``overlap`` and ``T`` are rounded
up to multiples of ``size_multiple`` so tile origins stay on the pooling grid
of the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from smearscan.errors import ConfigError


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value`` (``multiple`` >= 1)."""
    return int(math.ceil(value / multiple) * multiple)


@dataclass(frozen=True)
class Window:
    """A half-open rectangle ``[y0, y1) x [x0, x1)`` in pixels."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        """Rows in the window."""
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        """Columns in the window."""
        return self.x1 - self.x0

    def intersect(self, other: Window) -> Window | None:
        """Overlap of two windows, or None when they do not overlap."""
        y0, y1 = max(self.y0, other.y0), min(self.y1, other.y1)
        x0, x1 = max(self.x0, other.x0), min(self.x1, other.x1)
        if y0 >= y1 or x0 >= x1:
            return None
        return Window(y0, y1, x0, x1)


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Attributes:
        row: Tile row index in the grid.
        col: Tile column index in the grid.
        y0: Row of the tile's top-left pixel in image coordinates (may be < 0).
        x0: Column of the tile's top-left pixel (may be < 0).
        height: Rows of the tile in pixels.
        width: Columns of the tile in pixels.
    """

    row: int
    col: int
    y0: int
    x0: int
    height: int
    width: int

    @property
    def window(self) -> Window:
        """The full read window of the tile (context included), image coordinates."""
        return Window(self.y0, self.y0 + self.height, self.x0, self.x0 + self.width)


@dataclass(frozen=True)
class AxisTiling:
    """Tiling along one axis: tile length, halo, overlap and the resulting origins.

    Attributes:
        length: Image pixels along the axis.
        tile: Tile length along the axis.
        halo: Context margin per side (weight 0).
        overlap: Blending ramp shared by neighbouring tiles.
    """

    length: int
    tile: int
    halo: int
    overlap: int

    @property
    def stride(self) -> int:
        """Distance between neighbouring tile origins."""
        return self.tile - 2 * self.halo - self.overlap

    @cached_property
    def origins(self) -> tuple[int, ...]:
        """Tile origins: the first at ``-(halo + overlap)``, until full weight reaches the end."""
        origins = [-(self.halo + self.overlap)]
        while origins[-1] + self.tile - self.halo - self.overlap < self.length:
            origins.append(origins[-1] + self.stride)
        return tuple(origins)

    def weighted_span(self, origin: int) -> tuple[int, int]:
        """Image pixels ``[lo, hi)`` given non-zero weight by the tile at ``origin``."""
        return (max(0, origin + self.halo), min(self.length, origin + self.tile - self.halo))

    def core_span(self, origin: int) -> tuple[int, int]:
        """The ``stride``-long block the tile owns (blocks partition the axis); may be empty."""
        lo = origin + self.halo + self.overlap
        return (max(0, lo), min(self.length, lo + self.stride))

    @cached_property
    def weight(self) -> np.ndarray:
        """Blending weight along the tile, float64 ``(tile,)``, in [0, 1]."""
        t, h, o = self.tile, self.halo, self.overlap
        w = np.zeros(t, dtype=np.float64)
        w[h : t - h] = 1.0
        if o > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(o) + 0.5) / o)
            w[h : h + o] = ramp
            w[t - h - o : t - h] = ramp[::-1]
        return w


#: An axis whose whole length fits in a tile at most this many times the
#: configured side is covered by one tile of exactly the size it needs.
SINGLE_TILE_GROWTH = 1.5


def _axis(
    length: int, tile: int, halo: int, overlap: int, multiple: int, shrink_to_image: bool
) -> AxisTiling:
    if shrink_to_image:
        needed = round_up(length + 2 * (halo + overlap), multiple)
        if needed <= round_up(int(tile * SINGLE_TILE_GROWTH), multiple):
            tile = needed
    return AxisTiling(length=length, tile=tile, halo=halo, overlap=overlap)


@dataclass(frozen=True)
class TileGrid:
    """A grid of overlapping tiles covering an image, one :class:`AxisTiling` per axis.

    Build it with :meth:`create`, which validates and rounds the parameters.

    Attributes:
        rows: Tiling along y (image rows).
        cols: Tiling along x (image columns).
    """

    rows: AxisTiling
    cols: AxisTiling

    @classmethod
    def create(
        cls,
        height: int,
        width: int,
        *,
        tile_size: int,
        halo: int,
        overlap: int,
        size_multiple: int = 1,
        shrink_to_image: bool = True,
    ) -> TileGrid:
        """Validate parameters, round them to the model's size multiple and build a grid.

        Args:
            height: Image rows (>= 1).
            width: Image columns (>= 1).
            tile_size: Requested tile side in pixels.
            halo: Requested context margin in pixels (>= 0).
            overlap: Requested blending ramp width in pixels (>= 0).
            size_multiple: Tile sides and offsets must be multiples of this.
            shrink_to_image: Along an axis that fits in one tile of at most
                ``SINGLE_TILE_GROWTH * tile_size``, use one tile of exactly the
                needed length (a camera field then costs one tile, not four).

        Raises:
            ConfigError: When the tile leaves no room for its halo and overlap.
        """
        if height < 1 or width < 1:
            raise ConfigError(f"image size must be positive, got {height}x{width}")
        if halo < 0 or overlap < 0 or size_multiple < 1:
            raise ConfigError(
                f"halo ({halo}), overlap ({overlap}) must be >= 0 and size multiple "
                f"({size_multiple}) >= 1"
            )
        halo = round_up(halo, size_multiple)
        overlap = round_up(overlap, size_multiple)
        tile = round_up(tile_size, size_multiple)
        if tile - 2 * halo - overlap < size_multiple:
            raise ConfigError(
                f"tile size {tile_size} px is too small for a halo of {halo} px and an "
                f"overlap of {overlap} px (rounded to multiples of {size_multiple}): use "
                f"a tile of at least {2 * halo + overlap + size_multiple} px"
            )
        args = (tile, halo, overlap, size_multiple, shrink_to_image)
        return cls(rows=_axis(height, *args), cols=_axis(width, *args))

    @property
    def height(self) -> int:
        """Image rows."""
        return self.rows.length

    @property
    def width(self) -> int:
        """Image columns."""
        return self.cols.length

    @property
    def halo(self) -> int:
        """Context margin per tile side."""
        return self.rows.halo

    @property
    def overlap(self) -> int:
        """Blending ramp width."""
        return self.rows.overlap

    @property
    def tile_shape(self) -> tuple[int, int]:
        """Tile ``(rows, columns)``; the same for every tile, so tiles batch together."""
        return self.rows.tile, self.cols.tile

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        return len(self.rows.origins), len(self.cols.origins)

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def tile(self, row: int, col: int) -> Tile:
        """The tile at grid position ``(row, col)``."""
        return Tile(row, col, self.rows.origins[row], self.cols.origins[col], *self.tile_shape)

    def tiles(self, band_rows: int = 0) -> Iterator[Tile]:
        """All tiles, in an order that keeps a streaming merger's memory small.

        Args:
            band_rows: 0 for plain row-major order. Otherwise tiles come in
                horizontal bands of ``band_rows`` tile rows, column by column
                inside a band; a streaming merger then holds only one band's
                boundary and a few columns instead of a whole tile row.

        Yields:
            Each tile exactly once.
        """
        rows, cols = self.shape
        if band_rows <= 0:
            for r in range(rows):
                for c in range(cols):
                    yield self.tile(r, c)
            return
        for band_start in range(0, rows, band_rows):
            band = range(band_start, min(rows, band_start + band_rows))
            for c in range(cols):
                for r in band:
                    yield self.tile(r, c)

    def weighted_window(self, tile: Tile) -> Window:
        """Image pixels to which ``tile`` gives non-zero weight (clipped to the image)."""
        return Window(*self.rows.weighted_span(tile.y0), *self.cols.weighted_span(tile.x0))

    def core_window(self, tile: Tile) -> Window | None:
        """The stride-sized block the tile owns: these blocks partition the image.

        Returns None when the block lies outside the image. Use it to write
        per-tile data that needs no blending (e.g. the resampled image).
        """
        y0, y1 = self.rows.core_span(tile.y0)
        x0, x1 = self.cols.core_span(tile.x0)
        return Window(y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None

    @cached_property
    def weight_2d(self) -> np.ndarray:
        """Separable 2-D blending window, float32 ``tile_shape``."""
        return np.outer(self.rows.weight, self.cols.weight).astype(np.float32)
