"""Tiled inference with blending equals whole-image inference; streaming merger."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from smearscan.config import TilingConfig
from smearscan.inference import TilePredictor
from smearscan.models.tiny import TinyUNet
from smearscan.resample import array_reader
from smearscan.segmentation import ScaledSlide, band_rows_for, plan_grid, run_tiles, segment_array
from smearscan.stitching import InMemoryMerger, ZarrMerger, quantize_probabilities


def _whole_image(model: TinyUNet, image: np.ndarray) -> np.ndarray:
    predictor = TilePredictor(model, torch.device("cpu"))
    return predictor.predict(image[None])[0]


def _textured_image(h: int, w: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]
    return np.clip(img.astype(int) + rng.integers(-20, 20, size=img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("tile", "overlap"), [(64, 0), (64, 16), (96, 8), (128, 32)])
def test_tiled_equals_whole_image(tile: int, overlap: int):
    model = TinyUNet()
    image = _textured_image(200, 260)
    whole = _whole_image(model, image)
    tiled = segment_array(image, model, tiling=TilingConfig(tile_size_px=tile, overlap_px=overlap))
    border = model.spec.halo_px
    inner = (slice(None), slice(border, -border), slice(border, -border))
    assert np.abs(tiled[inner] - whole[inner]).max() <= 1e-3
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)


def test_too_small_halo_breaks_equality():
    """The halo matters: without it tile borders differ from the whole image."""
    model = TinyUNet()
    image = _textured_image(200, 260)
    whole = _whole_image(model, image)
    tiled = segment_array(
        image, model, tiling=TilingConfig(tile_size_px=64, overlap_px=0, halo_px=0)
    )
    assert np.abs(tiled[:, 16:-16, 16:-16] - whole[:, 16:-16, 16:-16]).max() > 1e-2


def test_zarr_merger_streams_the_same_result(tmp_path):
    model = TinyUNet()
    image = _textured_image(700, 900)
    tiling = TilingConfig(tile_size_px=96, overlap_px=16)
    grid = plan_grid(700, 900, model.spec, tiling)
    predictor = TilePredictor(model, torch.device("cpu"), batch_size=5)
    slide = ScaledSlide(array_reader(image), 1.0, 700, 900)

    memory = InMemoryMerger(grid, 5)
    run_tiles(slide, grid, predictor, memory)
    reference = memory.finalize()

    root = zarr.open_group(tmp_path / "m.zarr", mode="w")
    classes = root.create_array("classes", shape=(700, 900), chunks=(128, 128), dtype="uint8")
    probs = root.create_array("probs", shape=(5, 700, 900), chunks=(5, 128, 128), dtype="uint8")
    streaming = ZarrMerger(grid, 5, classes, probs, block_px=128)
    run_tiles(slide, grid, predictor, streaming, band_rows=band_rows_for(grid, 256))
    counts = streaming.finalize()

    np.testing.assert_array_equal(classes[:], reference.argmax(axis=0))
    assert np.abs(probs[:].astype(int) - quantize_probabilities(reference).astype(int)).max() <= 1
    assert counts.sum() == 700 * 900
    # banded order keeps far fewer blocks alive than the image has
    n_blocks = (-(-700 // 128)) * (-(-900 // 128))
    assert streaming.peak_blocks < n_blocks


def test_missing_tiles_are_detected():
    model = TinyUNet()
    grid = plan_grid(300, 300, model.spec, TilingConfig(tile_size_px=64, overlap_px=8))
    merger = InMemoryMerger(grid, 5)
    tiles = list(grid.tiles())[:-1]
    merger.aggregate(np.full((len(tiles), 5, 64, 64), 0.2, dtype=np.float32), tiles)
    with pytest.raises(RuntimeError, match="missing"):
        merger.finalize()
