"""Run a segmenter over a whole slide, tile by tile, into a :class:`Merger`.

This is the tiled inference engine: it plans the :class:`TileGrid` at the
model's scale, reads and resamples tiles (in background threads, a few
batches ahead), gathers them into batches across the slide, predicts them
with a :class:`TilePredictor` and blends the outputs with a merger. Memory is
bounded by the batch size, the prefetch depth and the merger, never by the
slide size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch

from smearscan.config import TilingConfig
from smearscan.inference import TilePredictor, choose_device
from smearscan.models.base import ModelSpec
from smearscan.resample import Reader, array_reader, resample_window
from smearscan.stitching import InMemoryMerger, Merger
from smearscan.tiling import Tile, TileGrid

log = logging.getLogger(__name__)

#: Called after each batch with (tiles, their RGB uint8 (N, Th, Tw, 3) inputs).
TileHook = Callable[[Sequence[Tile], np.ndarray], None]


@dataclass(frozen=True)
class ScaledSlide:
    """A source image seen at the model's scale.

    Attributes:
        read_source: Reader of the source pixels (``(H_src, W_src, 3)`` uint8).
        s: Model pixels per source pixel.
        height: Rows at the model scale.
        width: Columns at the model scale.
    """

    read_source: Reader
    s: float
    height: int
    width: int

    def read(self, tile: Tile) -> np.ndarray:
        """The tile's pixels at the model scale, uint8 ``(Th, Tw, 3)``."""
        return resample_window(self.read_source, tile.window, self.s)


def plan_grid(height: int, width: int, spec: ModelSpec, tiling: TilingConfig) -> TileGrid:
    """The tile grid for an image of ``height x width`` model-scale pixels.

    The halo is the model's receptive-field radius unless ``tiling.halo_px``
    asks for more (or less, at the user's risk); the tile side is the model's
    preferred one unless ``tiling.tile_size_px`` is set.
    """
    halo = spec.halo_px if tiling.halo_px is None else tiling.halo_px
    tile = spec.tile_px if tiling.tile_size_px is None else tiling.tile_size_px
    return TileGrid.create(
        height,
        width,
        tile_size=tile,
        halo=halo,
        overlap=tiling.overlap_px,
        size_multiple=spec.size_multiple,
    )


def band_rows_for(grid: TileGrid, target_px: int = 2048) -> int:
    """Tile rows per band so a band is about ``target_px`` tall (streaming order)."""
    return max(1, target_px // grid.rows.stride)


def _batches(tiles: Iterator[Tile], size: int) -> Iterator[list[Tile]]:
    while batch := list(islice(tiles, size)):
        yield batch


def run_tiles(
    slide: ScaledSlide,
    grid: TileGrid,
    predictor: TilePredictor,
    merger: Merger,
    *,
    prefetch_batches: int = 2,
    band_rows: int = 0,
    on_batch: TileHook | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Predict every tile of ``grid`` and feed the outputs to ``merger``.

    Tiles are read by a small thread pool while the model works on the
    previous batch; batches span tile rows, so the model always sees full
    batches until the last one.

    Args:
        slide: The source image and its scale.
        grid: Tile grid at the model scale.
        predictor: Batched model runner.
        merger: Receives the outputs (``aggregate``); not finalized here.
        prefetch_batches: Batches read ahead of the model.
        band_rows: Tile order (see :meth:`TileGrid.tiles`).
        on_batch: Optional hook receiving each batch's tiles and inputs.
        progress: Optional callback receiving the number of tiles just done.

    Returns:
        Number of tiles processed.
    """

    def read_batch(batch: list[Tile]) -> np.ndarray:
        return np.stack([slide.read(t) for t in batch])

    done = 0
    batches = _batches(grid.tiles(band_rows), predictor.batch_size)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="smearscan-read") as pool:
        queue: list[tuple[list[Tile], Future[np.ndarray]]] = []
        for batch in islice(batches, prefetch_batches):
            queue.append((batch, pool.submit(read_batch, batch)))
        while queue:
            batch, future = queue.pop(0)
            pixels = future.result()
            nxt = next(batches, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(read_batch, nxt)))
            merger.aggregate(predictor.predict(pixels), batch)
            if on_batch is not None:
                on_batch(batch, pixels)
            done += len(batch)
            if progress is not None:
                progress(len(batch))
    return done


def segment_array(
    image: np.ndarray,
    model: torch.nn.Module,
    *,
    tiling: TilingConfig | None = None,
    device: str = "cpu",
    batch_size: int = 4,
) -> np.ndarray:
    """Tiled, blended segmentation of an in-memory image already at the model scale.

    The notebook-friendly entry point of the engine (and the reference the
    tests compare with whole-image inference). The caller calibrates the
    model beforehand if it needs calibration.

    Args:
        image: RGB uint8 ``(H, W, 3)`` at ``model.spec.input_pixel_size_um``.
        model: A segmenter (see :mod:`smearscan.models.base`).
        tiling: Tile size, overlap and halo; defaults of :class:`TilingConfig`.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Tiles per forward pass.

    Returns:
        float32 ``(C, H, W)`` probabilities.
    """
    tiling = tiling or TilingConfig()
    spec: ModelSpec = model.spec  # type: ignore[assignment]
    grid = plan_grid(image.shape[0], image.shape[1], spec, tiling)
    predictor = TilePredictor(model, choose_device(device), batch_size=batch_size)
    merger = InMemoryMerger(grid, spec.n_classes)
    scaled = ScaledSlide(array_reader(image), 1.0, image.shape[0], image.shape[1])
    run_tiles(scaled, grid, predictor, merger)
    probs: np.ndarray = merger.finalize()
    return probs
