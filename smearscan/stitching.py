"""Blend overlapping tile predictions into one probability map.

A :class:`Merger` receives model outputs tile by tile (``aggregate``) and
produces the blended map (``finalize``). Each tile's output is multiplied by
the grid's raised-cosine window (:attr:`TileGrid.weight_2d`), so the seams
between tiles vanish and the context margin (halo) never contributes.
Probabilities are blended; class labels are derived afterwards by argmax and
are never averaged.

Two implementations:

* :class:`InMemoryMerger` keeps ``(C, H, W)`` float32 accumulators: for
  single fields and small scans.
* :class:`ZarrMerger` streams: it accumulates per output block and writes a
  block (probabilities as uint8 ``round(p * 255)`` and the argmax class map)
  into Zarr as soon as every tile touching it has arrived, then frees it.
  With tiles in banded order (:meth:`TileGrid.tiles`) memory stays at about
  one block row of the image, whatever the slide size.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from smearscan.tiling import Tile, TileGrid, Window

log = logging.getLogger(__name__)


def quantize_probabilities(probs: np.ndarray) -> np.ndarray:
    """Store probabilities compactly: float ``(C, ...)`` in [0, 1] -> uint8 ``round(p * 255)``."""
    return np.clip(np.rint(probs * 255.0), 0, 255).astype(np.uint8)


def argmax_classes(probs: np.ndarray) -> np.ndarray:
    """Semantic class map: float ``(C, H, W)`` -> uint8 ``(H, W)`` index of the largest channel."""
    return np.argmax(probs, axis=0).astype(np.uint8)


class Merger(ABC):
    """Accumulates weighted tile outputs of one :class:`TileGrid`.

    Args:
        grid: The grid the tiles come from.
        n_channels: Channels ``C`` of each tile output.
    """

    def __init__(self, grid: TileGrid, n_channels: int) -> None:
        self.grid = grid
        self.n_channels = n_channels
        self.class_pixels = np.zeros(n_channels, dtype=np.int64)

    def aggregate(self, values: np.ndarray, locations: Sequence[Tile]) -> None:
        """Add a batch of tile outputs.

        Args:
            values: float32 ``(N, C, Th, Tw)`` probabilities for ``N`` tiles.
            locations: The ``N`` tiles, in the same order.
        """
        if len(values) != len(locations):
            raise ValueError(f"{len(values)} outputs for {len(locations)} tiles")
        expected = (self.n_channels, *self.grid.tile_shape)
        if values.ndim != 4 or values.shape[1:] != expected:
            raise ValueError(f"expected (N, {', '.join(map(str, expected))}), got {values.shape}")
        for value, tile in zip(values, locations, strict=True):
            window = self.grid.weighted_window(tile)
            ys = slice(window.y0 - tile.y0, window.y1 - tile.y0)
            xs = slice(window.x0 - tile.x0, window.x1 - tile.x0)
            weight = self.grid.weight_2d[ys, xs]
            self._add(tile, window, value[:, ys, xs] * weight, weight)

    @abstractmethod
    def _add(self, tile: Tile, window: Window, weighted: np.ndarray, weight: np.ndarray) -> None:
        """Accumulate ``weighted`` (C, h, w) and ``weight`` (h, w) over image ``window``."""

    @abstractmethod
    def finalize(self) -> Any:
        """Finish blending; see the subclasses for what is returned."""


class InMemoryMerger(Merger):
    """Blend into float32 arrays held in memory (``(C + 1) * H * W * 4`` bytes)."""

    def __init__(self, grid: TileGrid, n_channels: int) -> None:
        super().__init__(grid, n_channels)
        self._sum = np.zeros((n_channels, grid.height, grid.width), dtype=np.float32)
        self._weight = np.zeros((grid.height, grid.width), dtype=np.float32)

    def _add(self, tile: Tile, window: Window, weighted: np.ndarray, weight: np.ndarray) -> None:
        self._sum[:, window.y0 : window.y1, window.x0 : window.x1] += weighted
        self._weight[window.y0 : window.y1, window.x0 : window.x1] += weight

    def finalize(self) -> np.ndarray:
        """Return the blended probabilities, float32 ``(C, H, W)``.

        Raises:
            RuntimeError: Some pixel received no tile (tiles missing).
        """
        if not np.all(self._weight > 0):
            raise RuntimeError("some pixels were not covered by any tile; tiles are missing")
        probs = self._sum / self._weight
        self.class_pixels = np.bincount(
            argmax_classes(probs).ravel(), minlength=self.n_channels
        ).astype(np.int64)
        return probs


class ZarrMerger(Merger):
    """Blend block by block and write finished blocks into Zarr arrays.

    Args:
        grid: The tile grid.
        n_channels: Channels ``C``.
        classes: Zarr array ``(H, W)`` uint8 receiving the argmax class map.
        probabilities: Optional Zarr array ``(C, H, W)`` uint8 receiving ``round(p*255)``.
        block_px: Side of the accumulation blocks; use the Zarr chunk side so
            every write is one whole chunk.
    """

    def __init__(
        self,
        grid: TileGrid,
        n_channels: int,
        classes: Any,
        probabilities: Any | None = None,
        *,
        block_px: int = 512,
    ) -> None:
        super().__init__(grid, n_channels)
        self.classes = classes
        self.probabilities = probabilities
        self.block_px = block_px
        nby = -(-grid.height // block_px)
        nbx = -(-grid.width // block_px)
        self._pending = np.zeros((nby, nbx), dtype=np.int32)
        for r in range(grid.shape[0]):
            for c in range(grid.shape[1]):
                by, bx = self._block_range(grid.weighted_window(grid.tile(r, c)))
                self._pending[by, bx] += 1
        self._blocks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.peak_blocks = 0

    def _block_range(self, window: Window) -> tuple[slice, slice]:
        b = self.block_px
        return (
            slice(window.y0 // b, (window.y1 - 1) // b + 1),
            slice(window.x0 // b, (window.x1 - 1) // b + 1),
        )

    def _block_window(self, by: int, bx: int) -> Window:
        b = self.block_px
        return Window(
            by * b, min((by + 1) * b, self.grid.height), bx * b, min((bx + 1) * b, self.grid.width)
        )

    def _add(self, tile: Tile, window: Window, weighted: np.ndarray, weight: np.ndarray) -> None:
        rows, cols = self._block_range(window)
        for by in range(rows.start, rows.stop):
            for bx in range(cols.start, cols.stop):
                block = self._block_window(by, bx)
                part = block.intersect(window)
                if part is None:  # pragma: no cover - block range guarantees overlap
                    continue
                acc, wacc = self._blocks.get((by, bx)) or self._new_block(by, bx, block)
                src = (
                    slice(part.y0 - window.y0, part.y1 - window.y0),
                    slice(part.x0 - window.x0, part.x1 - window.x0),
                )
                dst = (
                    slice(part.y0 - block.y0, part.y1 - block.y0),
                    slice(part.x0 - block.x0, part.x1 - block.x0),
                )
                acc[(slice(None), *dst)] += weighted[(slice(None), *src)]
                wacc[dst] += weight[src]
                self._pending[by, bx] -= 1
                if self._pending[by, bx] == 0:
                    self._write_block(by, bx, block)

    def _new_block(self, by: int, bx: int, block: Window) -> tuple[np.ndarray, np.ndarray]:
        acc = np.zeros((self.n_channels, block.height, block.width), dtype=np.float32)
        wacc = np.zeros((block.height, block.width), dtype=np.float32)
        self._blocks[(by, bx)] = (acc, wacc)
        self.peak_blocks = max(self.peak_blocks, len(self._blocks))
        return acc, wacc

    def _write_block(self, by: int, bx: int, block: Window) -> None:
        acc, wacc = self._blocks.pop((by, bx))
        probs = acc / np.maximum(wacc, np.float32(1e-12))
        classes = argmax_classes(probs)
        self.class_pixels += np.bincount(classes.ravel(), minlength=self.n_channels)
        self.classes[block.y0 : block.y1, block.x0 : block.x1] = classes
        if self.probabilities is not None:
            self.probabilities[:, block.y0 : block.y1, block.x0 : block.x1] = (
                quantize_probabilities(probs)
            )

    def finalize(self) -> np.ndarray:
        """Check that every block was written; return class pixel counts, int64 ``(C,)``.

        Raises:
            RuntimeError: Some tiles never arrived.
        """
        if self._blocks or np.any(self._pending):
            missing = int(np.count_nonzero(self._pending))
            raise RuntimeError(f"{missing} output blocks still wait for tiles; tiles are missing")
        log.debug(
            "streamed %d blocks, at most %d in memory at once", self._pending.size, self.peak_blocks
        )
        return self.class_pixels
