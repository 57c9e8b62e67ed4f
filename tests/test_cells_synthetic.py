"""Acceptance of the cell stage on the synthetic fields of ``sample_slides/`` (exact truth).

The whole product path runs (``process_batch`` with default settings and the
classical segmenter, pixel size estimated from the RBCs as in a real run), then
``labels/cells`` is brought back to the source grid and matched to the true cells.
These fields test the cell stage against exact truth; the classical segmenter is
the one tuned on the generator's stain styles, while the shipped ``unet-v1`` was
trained on real smears only and is scored on real data (``test_shipped_model.py``):

* the WBC count of every slide is exact;
* every WBC is matched one-to-one to its true cell with IoU >= 0.8;
* the two cells of every touching pair are two different cells;
* the Cells table (hence counts, ids, positions, features) is identical for
  three tile sizes, so a cell lying across tile borders is counted once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from smearscan.config import ProcessConfig, TilingConfig
from smearscan.evaluation import match_instances
from smearscan.pipeline import process_batch
from smearscan.resample import array_reader
from smearscan.results import BatchResult
from smearscan.review import preview_arrays
from smearscan.synth import SynthField, load_truth

SAMPLES = Path(__file__).resolve().parents[1] / "sample_slides"
SYNTH = sorted(SAMPLES.glob("synth_*.jpg"))
#: Tile sizes (model px) compared with the default single-tile run; the fields are
#: ~1040x780 model px at 0.25 um/px, so both give several tiles.
TILE_SIZES = (384, 512)


def _run(out: Path, tile_size_px: int | None = None) -> BatchResult:
    config = ProcessConfig(model="classical")
    if tile_size_px is not None:
        config = dataclasses.replace(config, tiling=TilingConfig(tile_size_px=tile_size_px))
    config = dataclasses.replace(
        config, output=dataclasses.replace(config.output, write_previews=False)
    )
    return process_batch(SYNTH, out / "report.xlsx", config)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> BatchResult:
    assert len(SYNTH) == 3, f"expected three synthetic fields in {SAMPLES}"
    return _run(tmp_path_factory.mktemp("default"))


def _truth_and_labels(result) -> tuple[SynthField, np.ndarray]:
    """The slide's truth and its ``labels/cells`` at the source resolution (nearest)."""
    field = load_truth(result.path)
    labels = zarr.open_group(result.mask_path, mode="r")["labels/cells/s0"]
    s = labels.shape[0] / result.height
    _, cells = preview_arrays(
        array_reader(field.image), labels, (result.height, result.width), s, 10**6
    )
    return field, cells


@pytest.mark.parametrize("index", range(3))
def test_every_wbc_counted_and_matched_with_iou_08(default_run: BatchResult, index: int):
    result = default_run.results[index]
    assert result.status == "ok", result.error
    field, cells = _truth_and_labels(result)
    assert result.wbc_count == len(field.wbcs), result.slide
    score = match_instances(field.cells, cells, min_iou=0.5)
    assert not score.missed and not score.extra, (result.slide, score.missed, score.extra)
    worst = min(score.matches, key=lambda m: m[2])
    assert worst[2] >= 0.8, f"{result.slide}: WBC {worst[0]} IoU {worst[2]:.3f}"


@pytest.mark.parametrize("index", range(3))
def test_touching_pairs_are_split(default_run: BatchResult, index: int):
    result = default_run.results[index]
    field, cells = _truth_and_labels(result)
    assert field.touching_pairs, "the generator always plants touching pairs"
    matched = {t: p for t, p, _ in match_instances(field.cells, cells, min_iou=0.5).matches}
    for a, b in field.touching_pairs:
        assert a in matched and b in matched, (result.slide, a, b)
        assert matched[a] != matched[b], f"{result.slide}: pair {a}/{b} is one cell"


def test_cells_table_is_the_same_for_three_tile_sizes(default_run: BatchResult, tmp_path: Path):
    reference = pd.concat(pd.DataFrame(r.cells) for r in default_run.results)
    assert len(reference) == sum(len(load_truth(p).wbcs) for p in SYNTH)
    assert all(r.tiles == 1 for r in default_run.results)
    for tile in TILE_SIZES:
        run = _run(tmp_path / str(tile), tile)
        assert all(r.tiles > 1 for r in run.results), tile
        table = pd.concat(pd.DataFrame(r.cells) for r in run.results)
        pd.testing.assert_frame_equal(
            reference.reset_index(drop=True), table.reset_index(drop=True)
        )


@pytest.mark.parametrize("index", range(3))
def test_each_row_measures_its_own_cell(default_run: BatchResult, index: int):
    """The morphometry of a row is that of the cell with its id in ``labels/cells``
    (a shifted id would give every cell its neighbour's measurements)."""
    result = default_run.results[index]
    labels = np.asarray(zarr.open_group(result.mask_path, mode="r")["labels/cells/s0"])
    s = result.pixel_size_um / result.model_pixel_size_um  # model px per source px
    areas = np.bincount(labels.ravel())
    for row in result.cells:
        assert not pd.isna(row["area_px"]), (result.slide, row["cell_id"])
        model_px = areas[row["cell_id"]]
        assert row["area_px"] == pytest.approx(model_px / s**2, rel=1e-3), row["cell_id"]
