"""A field without a smear gets zero cells and ``NO_SMEAR``, never a differential (issue #13,
item 4).

An all-black field used to get 51 WBCs from the default model (26 eosinophils at
confidence 1.0) and one image-wide WBC from the classical one; an all-NaN float
TIFF one eosinophil. Real smear fields must never be flagged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import zarr

from smearscan.batch import process_batch
from smearscan.blank_field import FieldContent, field_content, measure_content
from smearscan.config import ProcessConfig
from smearscan.flags import NO_SMEAR
from smearscan.slide_io import open_slide, read_region
from smearscan.synth import generate_field, write_field


def _config(model: str = "classical", classifier: str = "rules") -> ProcessConfig:
    config = ProcessConfig(model=model).with_overrides(
        classify={"classifier": classifier},
        scale={"pixel_size_um": 0.2},
        batch={"use_ledger": False},
    )
    return dataclasses.replace(
        config, output=dataclasses.replace(config.output, write_previews=False)
    )


def _blank_fields(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "black.png"), np.zeros((600, 800, 3), np.uint8))
    cv2.imwrite(str(folder / "white.png"), np.full((600, 800, 3), 255, np.uint8))
    noise = np.random.default_rng(0).normal(140, 8, (600, 800, 3))  # one grey + sensor noise
    cv2.imwrite(str(folder / "grey.jpg"), np.clip(noise, 0, 255).astype(np.uint8))
    tifffile.imwrite(folder / "nan.tif", np.full((600, 800), np.nan, np.float32))


def test_blank_fields_get_no_cells_and_the_flag_classical(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    _blank_fields(slides)
    write_field(generate_field(3, 640, 480), slides / "smear.png")
    for extra in slides.glob("*_truth.*"):
        extra.unlink()
    batch = process_batch([slides], tmp_path / "r.xlsx", _config())
    by_name = {r.slide: r for r in batch.results}
    for name in ("black.png", "white.png", "grey.jpg", "nan.tif"):
        result = by_name[name]
        assert result.status == "ok", (name, result.error)
        assert (result.wbc_count, result.rbc_count, result.platelet_count) == (0, 0, 0), name
        assert result.cells == [] and sum(result.cell_counts.values()) == 0, name
        assert NO_SMEAR in result.flags and NO_SMEAR in result.group_flags, name
        assert any(n.startswith(f"{NO_SMEAR}: no ") for n in result.notes), result.notes
    smear = by_name["smear.png"]
    assert NO_SMEAR not in smear.flags and smear.rbc_count and smear.rbc_count > 10
    assert any(NO_SMEAR in g.flags for g in batch.groups if g.group == "black.png")


def test_a_blank_field_has_background_masks_and_needs_no_pixel_size(tmp_path: Path) -> None:
    """Its outputs are there like any field's (OME-Zarr group, no cell labels, preview)."""
    slides = tmp_path / "slides"
    slides.mkdir()
    cv2.imwrite(str(slides / "white.png"), np.full((300, 400, 3), 255, np.uint8))
    config = ProcessConfig(model="classical").with_overrides(  # no --pixel-size
        classify={"classifier": "rules"}, batch={"use_ledger": False}
    )
    (result,) = process_batch([slides], tmp_path / "r.xlsx", config).results
    assert (result.status, result.flags, result.wbc_count) == ("ok", [NO_SMEAR], 0)
    assert result.pixel_size_um is None and "NO_SMEAR" in result.pixel_size_method
    assert result.tiles == 0 and result.class_fractions["background"] == 1.0
    group = zarr.open_group(result.mask_path, mode="r")
    assert not np.asarray(group["labels/classes/s0"]).any()
    assert not np.asarray(group["labels/cells/s0"]).any()
    assert (np.asarray(group["probabilities/s1"])[0] == 255).all()
    assert (np.asarray(group["s0"]) == 255).all()  # the resampled image: white
    assert Path(result.preview_path).is_file()


def test_black_field_gets_no_cells_with_the_default_model(tmp_path: Path) -> None:
    """The default model (unet-v1, cellnet-v1) hallucinated 51 WBCs on a black field."""
    slides = tmp_path / "slides"
    slides.mkdir()
    cv2.imwrite(str(slides / "black.png"), np.zeros((1024, 1024, 3), np.uint8))
    defaults = ProcessConfig()
    batch = process_batch(
        [slides], tmp_path / "r.xlsx", _config(defaults.model, defaults.classify.classifier)
    )
    (result,) = batch.results
    assert result.status == "ok", result.error
    assert result.wbc_count == 0 and result.cells == []
    assert result.flags == [NO_SMEAR]


def test_the_reasons_name_what_is_missing() -> None:
    dark = measure_content([np.full((64, 64, 3), 10, np.uint8)])
    assert "no illuminated background" in str(dark.blank_reason())
    flat = measure_content([np.full((64, 64, 3), 200, np.uint8)])
    assert "no stained cells" in str(flat.blank_reason())
    assert FieldContent(float("nan"), 0.0, 0).blank_reason() is not None


_REAL_SETS = (
    "txl-pbc/val/images",
    "txl-pbc/train/images",
    "wbc-seg/cellavision/images",
    "wbc-seg/jiangxi/images",
    "chula-rbc/images",
    "pbc-cells/platelet",
    "pbc-cells/lymphocyte",
)


def test_real_smear_fields_are_never_flagged(shared_data: Path) -> None:
    """A handful of real fields of every data set, opened as slides: none is blank."""
    checked = 0
    for folder in _REAL_SETS:
        files = sorted(p for p in (shared_data / folder).glob("*") if p.is_file())[:6]
        for path in files:
            with open_slide(path) as slide:
                content = field_content(
                    lambda w, s=slide: read_region(s, w.y0, w.y1, w.x0, w.x1),
                    slide.height,
                    slide.width,
                )
            assert content.blank_reason() is None, (path, content)
            checked += 1
    if checked == 0:
        pytest.skip("no real images found under the shared data sets")
