"""End to end through the library API: outputs, failure isolation, streaming, tiling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pandas as pd
import pytest
import zarr

from smearscan.config import DEFAULT_MODEL, ProcessConfig, ScaleConfig, TilingConfig
from smearscan.pipeline import process_batch, process_slide
from smearscan.slide_keys import slide_key
from smearscan.synth import generate_field, write_field

PIXEL_SIZE_UM = 0.1


@pytest.fixture(scope="module")
def field():
    return generate_field(3, width=900, height=700, pixel_size_um=PIXEL_SIZE_UM)


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory, field) -> Path:
    """Two synthetic fields plus every kind of bad file, in nested folders."""
    root = tmp_path_factory.mktemp("slides")
    write_field(field, root / "a" / "field one.png")
    write_field(
        generate_field(4, width=700, height=500, pixel_size_um=PIXEL_SIZE_UM),
        root / "b" / "field_two.png",
    )
    (root / "bad").mkdir()
    (root / "bad" / "zero.jpg").write_bytes(b"")
    _, jpeg = cv2.imencode(".jpg", field.image)
    (root / "bad" / "truncated.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    (root / "bad" / "notes.bin").write_bytes(b"\x00\x01 this is not an image at all")
    (root / "bad" / "fake.png").write_bytes(b"plain text pretending to be a PNG")
    return root


def _config(**tiling) -> ProcessConfig:
    return ProcessConfig(
        scale=ScaleConfig(pixel_size_um=PIXEL_SIZE_UM), tiling=TilingConfig(**tiling)
    )


def test_batch_outputs_and_failure_isolation(slide_dir: Path, tmp_path: Path):
    batch = process_batch([slide_dir], tmp_path / "out" / "report.xlsx", _config())
    by_name = {r.slide: r for r in batch.results}
    assert sorted(by_name) == [
        "a/field one.png",
        "b/field_two.png",
        "bad/fake.png",
        "bad/notes.bin",
        "bad/truncated.jpg",
        "bad/zero.jpg",
    ]
    assert by_name["a/field one.png"].status == "ok"
    assert by_name["b/field_two.png"].status == "ok"
    assert len(batch.failed) == 4

    report = tmp_path / "out" / "report.xlsx"
    assert openpyxl.load_workbook(report).sheetnames == [
        "Summary",
        "Cells",
        "Differential",
        "Run",
        "Errors",
    ]
    summary = pd.read_excel(report, sheet_name="Summary")
    errors = pd.read_excel(report, sheet_name="Errors")
    assert list(summary["slide"]) == sorted(by_name)
    assert {
        "slide",
        "width",
        "height",
        "pixel_size_um",
        "wbc_count",
        "blast_percent",
        "rbc_count",
        "platelet_count",
        "flags",
        "status",
        "mask_path",
    } <= set(summary)
    assert sorted(errors["slide"]) == [
        "bad/fake.png",
        "bad/notes.bin",
        "bad/truncated.jpg",
        "bad/zero.jpg",
    ]
    reasons = dict(zip(errors["slide"], errors["message"], strict=True))
    assert "empty" in reasons["bad/zero.jpg"]
    assert "truncated" in reasons["bad/truncated.jpg"]
    assert "not an image" in reasons["bad/notes.bin"]
    for slide, message in reasons.items():
        assert Path(slide).name in message  # the message names the file
    run = pd.read_excel(report, sheet_name="Run").set_index("key")["value"]
    assert run["model"] == DEFAULT_MODEL and run["param.tiling.overlap_px"] == 32

    ok = summary[summary["status"] == "ok"].set_index("slide")
    assert ok.loc["a/field one.png", "width"] == 900
    assert ok.loc["a/field one.png", "pixel_size_um"] == pytest.approx(PIXEL_SIZE_UM)
    group = zarr.open_group(report.parent / ok.loc["a/field one.png", "mask_path"], mode="r")
    assert group.attrs["ome"]["version"] == "0.5"
    assert group["labels"].attrs["ome"]["labels"] == ["classes", "cells", "nuclei"]
    classes = group["labels/classes/s0"]
    # 900x700 at 0.1 µm/px -> the default model's 0.2 µm/px
    assert classes.dtype == np.uint8 and classes.shape == (350, 450)
    assert group["probabilities/s0"].shape == (5, 350, 450)
    assert group["s0"].shape == (3, 350, 450)
    assert set(np.unique(classes[:])) <= {0, 1, 2, 3, 4}
    # failed slides leave no Zarr group behind
    assert sorted(k for k in zarr.open_group(report.with_suffix(".zarr"), mode="r")) == sorted(
        [slide_key("a/field one.png"), "b__field_two.png"]  # a space: the key is hashed
    )


def test_segmentation_matches_synthetic_truth(slide_dir: Path, tmp_path: Path, field):
    result = process_slide(slide_dir / "a" / "field one.png", _config(), tmp_path / "m.zarr")
    classes = zarr.open_group(result.mask_path, mode="r")["labels/classes/s0"][:]
    truth = cv2.resize(field.classes, classes.shape[::-1], interpolation=cv2.INTER_NEAREST)
    for value, floor in ((3, 0.8), (1, 0.8)):  # nucleus, RBC
        pred, true = classes == value, truth == value
        dice = 2 * np.logical_and(pred, true).sum() / (pred.sum() + true.sum())
        assert dice > floor, f"class {value}: Dice {dice:.3f}"


def test_streaming_equals_in_memory(slide_dir: Path, tmp_path: Path):
    path = slide_dir / "a" / "field one.png"
    memory = process_slide(path, _config(tile_size_px=320), tmp_path / "mem.zarr")
    stream = process_slide(
        path, _config(tile_size_px=320, in_memory_limit_mb=1), tmp_path / "stream.zarr"
    )
    assert (memory.stitching, stream.stitching) == ("memory", "zarr-stream")
    a = zarr.open_group(memory.mask_path, mode="r")
    b = zarr.open_group(stream.mask_path, mode="r")
    np.testing.assert_array_equal(a["labels/classes/s0"][:], b["labels/classes/s0"][:])
    diff = np.abs(a["probabilities/s0"][:].astype(int) - b["probabilities/s0"][:].astype(int))
    assert diff.max() <= 1
    np.testing.assert_array_equal(a["s0"][:], b["s0"][:])


@pytest.mark.parametrize("tile", [288, 320])
def test_classes_do_not_depend_on_the_tile_grid(slide_dir: Path, tmp_path: Path, tile: int):
    path = slide_dir / "a" / "field one.png"
    reference = process_slide(path, _config(tile_size_px=2048), tmp_path / "ref.zarr")
    tiled = process_slide(path, _config(tile_size_px=tile, overlap_px=16), tmp_path / "t.zarr")
    assert tiled.tiles > reference.tiles
    for name in ("classes", "cells", "nuclei"):
        a = zarr.open_group(reference.mask_path, mode="r")[f"labels/{name}/s0"][:]
        b = zarr.open_group(tiled.mask_path, mode="r")[f"labels/{name}/s0"][:]
        np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(pd.DataFrame(reference.cells), pd.DataFrame(tiled.cells))


def test_pixel_size_from_metadata_then_rbcs(slide_dir: Path, tmp_path: Path):
    path = slide_dir / "a" / "field one.png"
    config = dataclasses.replace(_config(), scale=ScaleConfig())
    result = process_slide(path, config, tmp_path / "m.zarr")
    assert result.pixel_size_method == "file metadata"
    assert result.pixel_size_um == pytest.approx(PIXEL_SIZE_UM, rel=0.01)

    config = dataclasses.replace(_config(), scale=ScaleConfig(use_metadata=False))
    result = process_slide(path, config, tmp_path / "m.zarr")
    assert "RBC" in result.pixel_size_method
    assert result.pixel_size_um == pytest.approx(PIXEL_SIZE_UM, rel=0.1)


def test_16bit_grayscale_tiff_is_converted_with_a_logged_note(tmp_path: Path, field, caplog):
    import tifffile

    gray16 = cv2.cvtColor(field.image, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "gray16.tif", gray16, tile=(256, 256))
    with caplog.at_level("INFO", logger="smearscan"):
        result = process_slide(tmp_path / "gray16.tif", _config(), tmp_path / "m.zarr")
    assert result.status == "ok"
    assert any("16-bit" in n for n in result.notes)
    assert any("16-bit" in r.getMessage() for r in caplog.records)


def test_cells_agree_with_labels_and_summary(slide_dir: Path, tmp_path: Path, field):
    # the classical segmenter: its cell count on this synthetic field is exact (the
    # shipped U-Net, trained on real smears only, merges its touching pair)
    config = dataclasses.replace(_config(), model="classical")
    batch = process_batch([slide_dir / "a"], tmp_path / "r.xlsx", config)
    (result,) = batch.results
    group = zarr.open_group(result.mask_path, mode="r")
    cells_labels = group["labels/cells/s0"][:]
    nuclei_labels = group["labels/nuclei/s0"][:]
    assert cells_labels.dtype == np.int32 and nuclei_labels.dtype == np.int32
    table = pd.read_excel(tmp_path / "r.xlsx", sheet_name="Cells")
    summary = pd.read_excel(tmp_path / "r.xlsx", sheet_name="Summary").iloc[0]
    assert summary["wbc_count"] == len(table) == len(set(np.unique(cells_labels)) - {0})
    assert sorted(table["cell_id"]) == sorted(set(np.unique(cells_labels)) - {0})
    for cell_type in ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "other"):
        assert summary[cell_type] == (table["cell_type"] == cell_type).sum()
    assert summary["blast_count"] == table["is_blast"].sum()
    # nuclei carry the id of their cell; centroids (original pixels) fall inside the cell
    inside = nuclei_labels > 0
    assert np.all(cells_labels[inside] == nuclei_labels[inside])
    s = cells_labels.shape[0] / result.height  # label pixels per source pixel
    for row in table.itertuples():
        y, x = int((row.centroid_y + 0.5) * s), int((row.centroid_x + 0.5) * s)
        window = cells_labels[max(0, y - 3) : y + 4, max(0, x - 3) : x + 4]
        assert row.cell_id in window, row
        assert row.bbox_x0 <= row.centroid_x <= row.bbox_x1
    assert len(pd.read_parquet(tmp_path / "r_cells.parquet")) == len(table)
    assert len(table) == len(field.wbcs)
