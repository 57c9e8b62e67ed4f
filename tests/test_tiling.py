"""Tile geometry: coverage, partition of unity, alignment and validation."""

from __future__ import annotations

import numpy as np
import pytest

from smearscan.errors import ConfigError
from smearscan.tiling import TileGrid, Window


def _weight_sum(grid: TileGrid) -> np.ndarray:
    total = np.zeros((grid.height, grid.width))
    for tile in grid.tiles():
        win = grid.weighted_window(tile)
        ys = slice(win.y0 - tile.y0, win.y1 - tile.y0)
        xs = slice(win.x0 - tile.x0, win.x1 - tile.x0)
        total[win.y0 : win.y1, win.x0 : win.x1] += grid.weight_2d[ys, xs]
    return total


@pytest.mark.parametrize(
    ("height", "width", "tile", "halo", "overlap", "multiple"),
    [
        (1000, 700, 256, 16, 32, 1),
        (517, 1301, 128, 24, 16, 8),
        (40, 30, 256, 20, 10, 1),
        (777, 555, 96, 8, 0, 16),
    ],
)
def test_weights_are_a_partition_of_unity(height, width, tile, halo, overlap, multiple):
    grid = TileGrid.create(
        height, width, tile_size=tile, halo=halo, overlap=overlap, size_multiple=multiple
    )
    np.testing.assert_allclose(_weight_sum(grid), 1.0, atol=1e-6)


def test_weighted_pixels_keep_halo_context():
    grid = TileGrid.create(900, 900, tile_size=200, halo=30, overlap=20)
    for tile in grid.tiles():
        win = grid.weighted_window(tile)
        assert win.y0 - tile.y0 >= grid.halo and tile.y0 + tile.height - win.y1 >= grid.halo
        assert win.x0 - tile.x0 >= grid.halo and tile.x0 + tile.width - win.x1 >= grid.halo


def test_rounding_keeps_tiles_on_the_pooling_grid():
    grid = TileGrid.create(1000, 1000, tile_size=250, halo=13, overlap=5, size_multiple=16)
    assert all(t % 16 == 0 for t in grid.tile_shape)
    assert grid.halo % 16 == 0 and grid.overlap % 16 == 0
    assert all(o % 16 == 0 for o in grid.rows.origins + grid.cols.origins)


def test_core_windows_partition_the_image():
    grid = TileGrid.create(613, 457, tile_size=128, halo=16, overlap=16)
    hits = np.zeros((613, 457), dtype=int)
    for tile in grid.tiles():
        core = grid.core_window(tile)
        if core is not None:
            hits[core.y0 : core.y1, core.x0 : core.x1] += 1
    assert np.all(hits == 1)


def test_banded_order_visits_every_tile_once():
    grid = TileGrid.create(3000, 2000, tile_size=256, halo=16, overlap=16)
    plain = list(grid.tiles())
    banded = list(grid.tiles(band_rows=3))
    assert sorted(plain, key=lambda t: (t.row, t.col)) == sorted(
        banded, key=lambda t: (t.row, t.col)
    )
    assert len(set(banded)) == len(grid)
    assert [t.row for t in banded[:3]] == [0, 1, 2]  # column by column inside a band


def test_small_images_get_one_small_tile():
    grid = TileGrid.create(60, 50, tile_size=512, halo=20, overlap=8, size_multiple=8)
    assert len(grid) == 1
    assert grid.tile_shape == (128, 120)  # 60 + 2 * (24 + 8) rounded up to 8; likewise 50


def test_an_axis_that_nearly_fits_gets_one_rectangular_tile():
    # a 2592x1944 camera field at 0.25 µm/px with the classical halo
    grid = TileGrid.create(778, 1037, tile_size=1024, halo=109, overlap=32)
    assert grid.shape == (1, 1) and grid.tile_shape == (1060, 1319)
    # a long strip: one tile across, several along
    grid = TileGrid.create(5000, 300, tile_size=512, halo=16, overlap=16)
    assert grid.shape[1] == 1 and grid.shape[0] > 1 and grid.tile_shape == (512, 364)
    np.testing.assert_allclose(_weight_sum(grid), 1.0, atol=1e-6)


def test_too_small_tile_is_a_config_error():
    with pytest.raises(ConfigError, match="too small"):
        TileGrid.create(500, 500, tile_size=64, halo=32, overlap=16)


def test_window_intersection():
    assert Window(0, 10, 0, 10).intersect(Window(5, 20, -5, 3)) == Window(5, 10, 0, 3)
    assert Window(0, 10, 0, 10).intersect(Window(10, 20, 0, 10)) is None
