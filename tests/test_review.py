"""Previews written by ``process_batch``: overlays from the slide's own labels, the review page."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import zarr

from smearscan.config import OutputConfig, ProcessConfig, ScaleConfig
from smearscan.pipeline import process_batch
from smearscan.resample import array_reader, labels_to_source
from smearscan.results import BatchResult
from smearscan.review import preview_arrays
from smearscan.synth import generate_field, write_field
from tests.chromium import CHROMIUM, MISSING, file_of, load_page

PIXEL_SIZE_UM = 0.1


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> BatchResult:
    """Two synthetic fields (one with a space in its name) and one corrupt file."""
    root = tmp_path_factory.mktemp("slides")
    write_field(generate_field(5, width=900, height=700), root / "field one.png")
    write_field(generate_field(6, width=800, height=600), root / "field_two.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    config = ProcessConfig(scale=ScaleConfig(pixel_size_um=PIXEL_SIZE_UM))
    out = tmp_path_factory.mktemp("out") / "report.xlsx"
    return process_batch([root], out, config)


def test_each_ok_slide_gets_an_overlay_and_thumbnail(batch: BatchResult):
    previews = batch.outputs.previews
    summary = pd.read_excel(batch.outputs.report, sheet_name="Summary").set_index("slide")
    for result in batch.results:
        if result.status != "ok":
            assert not result.preview_path
            assert pd.isna(summary.loc[result.slide, "preview_path"])
            continue
        overlay = Path(result.preview_path)
        assert overlay.parent == previews.resolve() and overlay.is_file()
        assert (batch.outputs.report.parent / summary.loc[result.slide, "preview_path"]).samefile(
            overlay
        )
        image = cv2.imread(str(overlay))
        assert image.shape[:2] == (result.height, result.width)  # fields keep their resolution
        thumb = cv2.imread(str(previews / "thumbnails" / overlay.name))
        assert max(thumb.shape[:2]) == 320
    assert (previews / "index.html").is_file()


def test_overlay_contours_follow_the_cells_labels(batch: BatchResult):
    """Contour pixels sit on the boundaries of ``labels/cells`` brought to the source grid."""
    result = next(r for r in batch.results if r.slide == "field one.png")
    labels = zarr.open_group(result.mask_path, mode="r")["labels/cells/s0"][:]
    s = labels.shape[0] / result.height
    cells = labels_to_source(labels, s, result.height, result.width)
    assert set(np.unique(cells)) - {0} == {c["cell_id"] for c in result.cells}
    source = cv2.imread(str(Path(result.path)))
    overlay = cv2.imread(result.preview_path)
    changed = np.abs(overlay.astype(int) - source.astype(int)).sum(axis=2) > 60
    edge = cv2.morphologyEx((cells > 0).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3)))
    near_edge = cv2.dilate(edge, np.ones((7, 7), np.uint8)) > 0
    on_cells = changed & near_edge
    assert on_cells.sum() > 0.5 * edge.sum()  # most of every contour is drawn


def test_preview_arrays_downscale_large_slides():
    """A slide larger than max_side is shrunk; labels are looked up, never interpolated."""
    height, width, s = 1500, 3000, 0.4
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    labels = np.zeros((600, 1200), np.int32)
    labels[100:300, 200:500] = 7
    labels[400:500, 900:1100] = 9
    small_image, small_cells = preview_arrays(array_reader(image), labels, (height, width), s, 1000)
    assert small_image.shape == (500, 1000, 3) and small_cells.shape == (500, 1000)
    assert set(np.unique(small_cells)) == {0, 7, 9}
    # label 7 covers source rows 250-750, cols 500-1250 -> preview rows 83-250, cols 167-417
    assert small_cells[90:240, 175:410].min() == 7
    assert small_cells[:75].max() == 0


def test_no_previews_when_disabled(tmp_path: Path):
    write_field(generate_field(7, width=600, height=500), tmp_path / "in" / "f.png")
    config = dataclasses.replace(
        ProcessConfig(scale=ScaleConfig(pixel_size_um=PIXEL_SIZE_UM)),
        output=OutputConfig(write_previews=False),
    )
    result = process_batch([tmp_path / "in"], tmp_path / "o" / "r.xlsx", config)
    assert result.results[0].status == "ok" and not result.results[0].preview_path
    assert not result.outputs.previews.exists()


@pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING)
def test_review_page_of_a_batch_in_headless_chromium(batch: BatchResult, tmp_path: Path):
    view = load_page(batch.outputs.previews / "index.html", tmp_path / "profile")
    assert view.state["articles"] == len(batch.results) == 3
    assert view.state["failed"] == 1
    assert len(view.state["images"]) == 2 and all(ok for _, ok in view.state["images"])
    overlays = {file_of(h).resolve() for h in view.state["links"]}
    assert overlays == {Path(r.preview_path) for r in batch.results if r.status == "ok"}
    assert not view.errors, f"console errors: {view.errors}"


def test_a_preview_that_cannot_be_written_costs_no_counts(tmp_path: Path, caplog):
    write_field(generate_field(8, width=600, height=500), tmp_path / "in" / "f.png")
    out = tmp_path / "o" / "r.xlsx"
    out.parent.mkdir()
    (tmp_path / "o" / "r_previews").write_text("a file where the preview folder should be")
    config = ProcessConfig(scale=ScaleConfig(pixel_size_um=PIXEL_SIZE_UM))
    result = process_batch([tmp_path / "in"], out, config).results[0]
    assert result.status == "ok" and result.wbc_count and result.wbc_count > 0
    assert not result.preview_path
    assert any("preview not written" in n for n in result.notes)
    assert "review page not written" in caplog.text
    assert pd.read_excel(out, sheet_name="Summary")["wbc_count"].iloc[0] == result.wbc_count
