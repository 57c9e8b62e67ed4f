"""Tile geometry: the grid, the halo, blending weights and processing order.

Pure geometry: no I/O, no torch. All coordinates are pixels of the image the
model sees (the slide resampled to the model's input scale); ``y`` is the row,
``x`` the column, windows are half-open ``[start, stop)``.

A tile of side ``T`` starts at ``origin`` (which may be negative or run past
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
        size: Side ``T`` of the square tile in pixels.
    """

    row: int
    col: int
    y0: int
    x0: int
    size: int

    @property
    def window(self) -> Window:
        """The full read window of the tile (context included), image coordinates."""
        return Window(self.y0, self.y0 + self.size, self.x0, self.x0 + self.size)


@dataclass(frozen=True)
class TileGrid:
    """A grid of overlapping square tiles covering an ``height x width`` image.

    Build it with :meth:`create`, which validates and rounds the parameters.

    Attributes:
        height: Image rows in pixels.
        width: Image columns in pixels.
        tile_size: Tile side ``T`` in pixels.
        halo: Context margin on each side, weight 0, >= receptive-field radius.
        overlap: Width of the blending ramp shared by neighbouring tiles.
    """

    height: int
    width: int
    tile_size: int
    halo: int
    overlap: int

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
            size_multiple: Tile side and offsets must be multiples of this.
            shrink_to_image: Use a smaller tile when one tile of that size
                covers the whole image (saves work on small images).

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
        if shrink_to_image:
            needed = round_up(max(height, width) + 2 * (halo + overlap), size_multiple)
            tile = min(tile, needed)
        return cls(height=height, width=width, tile_size=tile, halo=halo, overlap=overlap)

    @property
    def stride(self) -> int:
        """Distance between the origins of neighbouring tiles, in pixels."""
        return self.tile_size - 2 * self.halo - self.overlap

    def _origins(self, length: int) -> list[int]:
        start = -(self.halo + self.overlap)
        last_needed = length  # the full-weight region must reach the image end
        origins = [start]
        while origins[-1] + self.tile_size - self.halo - self.overlap < last_needed:
            origins.append(origins[-1] + self.stride)
        return origins

    @cached_property
    def row_origins(self) -> tuple[int, ...]:
        """``y0`` of each tile row."""
        return tuple(self._origins(self.height))

    @cached_property
    def col_origins(self) -> tuple[int, ...]:
        """``x0`` of each tile column."""
        return tuple(self._origins(self.width))

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        return len(self.row_origins), len(self.col_origins)

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def tile(self, row: int, col: int) -> Tile:
        """The tile at grid position ``(row, col)``."""
        return Tile(row, col, self.row_origins[row], self.col_origins[col], self.tile_size)

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
        lo, hi = self.halo, self.tile_size - self.halo
        full = Window(tile.y0 + lo, tile.y0 + hi, tile.x0 + lo, tile.x0 + hi)
        clipped = full.intersect(Window(0, self.height, 0, self.width))
        if clipped is None:  # cannot happen for tiles of this grid
            raise ValueError(f"tile {tile} has no weight inside the image")
        return clipped

    def core_window(self, tile: Tile) -> Window | None:
        """The ``stride``-sized block the tile owns: these blocks partition the image.

        Returns None when the block lies outside the image. Use it to write
        per-tile data that needs no blending (e.g. the resampled image).
        """
        lead = self.halo + self.overlap
        block = Window(
            tile.y0 + lead,
            tile.y0 + lead + self.stride,
            tile.x0 + lead,
            tile.x0 + lead + self.stride,
        )
        return block.intersect(Window(0, self.height, 0, self.width))

    @cached_property
    def weight_1d(self) -> np.ndarray:
        """Blending weight along one axis of a tile, float64 ``(T,)``, in [0, 1]."""
        t, h, o = self.tile_size, self.halo, self.overlap
        w = np.zeros(t, dtype=np.float64)
        w[h : t - h] = 1.0
        if o > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(o) + 0.5) / o)
            w[h : h + o] = ramp
            w[t - h - o : t - h] = ramp[::-1]
        return w

    @cached_property
    def weight_2d(self) -> np.ndarray:
        """Separable 2-D blending window, float32 ``(T, T)``."""
        w = self.weight_1d
        return np.outer(w, w).astype(np.float32)
