"""Tests of the synthetic smear generator (smearscan.synth)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from smearscan.errors import ConfigError, InputError
from smearscan.models.base import SEMANTIC_CLASSES
from smearscan.synth import (
    DEFAULT_BORDER_POSITIONS_PX,
    DIAMETER_RANGES_UM,
    PLATELET_DIAMETER_UM,
    RBC_DIAMETER_UM,
    StainStyle,
    SynthField,
    generate_field,
    load_truth,
    truth_paths,
    write_field,
    write_large_tiff,
    write_sample_set,
)

SMALL_BORDERS = (256, 512)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _small(seed: int) -> SynthField:
    """An 800x600 field with 8 WBCs, 2 touching pairs and 4 border lines."""
    return generate_field(
        seed, 800, 600, n_wbc=8, n_touching_pairs=2, border_positions_px=SMALL_BORDERS
    )


@pytest.fixture(scope="module")
def small() -> SynthField:
    return _small(3)


@pytest.fixture(scope="module")
def small_fields(small: SynthField) -> list[SynthField]:
    others = [_small(s) for s in (11, 12)]
    return [small, *others]


@pytest.fixture(scope="module")
def full() -> SynthField:
    return generate_field(0)


def _eq_diameter_um(area_px: int | np.ndarray, pixel_size_um: float) -> np.ndarray:
    return 2.0 * np.sqrt(np.asarray(area_px, dtype=float) / np.pi) * pixel_size_um


def test_deterministic_by_seed(small: SynthField) -> None:
    again = _small(3)
    for name in ("image", "classes", "cells", "nuclei", "rbcs", "platelets"):
        assert np.array_equal(getattr(small, name), getattr(again, name)), name
    assert again.wbcs == small.wbcs
    assert again.stain == small.stain
    other = _small(4)
    assert not np.array_equal(other.image, small.image)
    assert other.stain != small.stain


def test_classes_follow_instance_maps(small_fields: list[SynthField]) -> None:
    assert len(SEMANTIC_CLASSES) == 5
    for f in small_fields:
        assert f.image.shape == (600, 800, 3) and f.image.dtype == np.uint8
        assert f.classes.dtype == np.uint8 and set(np.unique(f.classes)) <= {0, 1, 2, 3, 4}
        for name in ("cells", "nuclei", "rbcs", "platelets"):
            assert getattr(f, name).dtype == np.int32
        nuc = f.nuclei > 0
        assert np.array_equal(f.cells[nuc], f.nuclei[nuc])  # nuclei inside their own cell
        assert np.array_equal(f.classes == 3, nuc)
        assert np.array_equal(f.classes == 2, (f.cells > 0) & ~nuc)
        assert np.array_equal(f.classes == 1, f.rbcs > 0)
        assert np.array_equal(f.classes == 4, f.platelets > 0)
        for labels, n in ((f.cells, f.n_wbc), (f.rbcs, f.n_rbc), (f.platelets, f.n_platelets)):
            assert np.array_equal(np.unique(labels[labels > 0]), np.arange(1, n + 1))
        assert f.n_rbc > 50 and f.n_platelets >= 1


def test_wbc_records_match_masks(small_fields: list[SynthField]) -> None:
    for f in small_fields:
        assert [w.id for w in f.wbcs] == list(range(1, f.n_wbc + 1)) and f.n_wbc == 8
        keys = [(w.centroid_y, w.centroid_x) for w in f.wbcs]
        assert keys == sorted(keys)  # ids ordered by centroid row then column
        for w in f.wbcs:
            rows, cols = np.nonzero(f.cells == w.id)
            assert (w.bbox_x0, w.bbox_y0) == (cols.min(), rows.min())
            assert (w.bbox_x1, w.bbox_y1) == (cols.max() + 1, rows.max() + 1)
            assert w.centroid_x == pytest.approx(cols.mean())
            assert w.centroid_y == pytest.approx(rows.mean())
            assert w.area_px == rows.size
            assert w.nucleus_area_px == int((f.nuclei == w.id).sum()) > 0
            assert w.area_px > w.nucleus_area_px


def test_cells_and_lobed_nuclei_are_one_piece(small_fields: list[SynthField]) -> None:
    lobed = 0
    for f in small_fields:
        for w in f.wbcs:
            _, n_cell = ndimage.label(f.cells == w.id)
            assert n_cell == 1, (w.id, w.cell_type)
            _, n_nuc = ndimage.label(f.nuclei == w.id, structure=np.ones((3, 3)))
            assert n_nuc == 1, (w.id, w.cell_type)  # lobes joined by strands
            if w.cell_type == "neutrophil":
                assert 2 <= w.n_lobes <= 5
            if w.cell_type in ("lymphocyte", "monocyte"):
                assert w.n_lobes == 1
            lobed += w.n_lobes >= 2
    assert lobed >= 3


def test_every_cell_type_present(small: SynthField, full: SynthField) -> None:
    assert set(small.counts_by_type()) == set(DIAMETER_RANGES_UM)
    assert set(full.counts_by_type()) == set(DIAMETER_RANGES_UM)


def test_touching_pairs_touch_with_separate_nuclei(small_fields: list[SynthField]) -> None:
    grow = np.ones((3, 3), bool)
    for f in small_fields:
        assert len(f.touching_pairs) == 2
        paired = {i for pair in f.touching_pairs for i in pair}
        for a, b in f.touching_pairs:
            assert a != b
            assert ndimage.binary_dilation(f.cells == a, grow)[f.cells == b].any()
            assert not ndimage.binary_dilation(f.nuclei == a, grow)[f.nuclei == b].any()
            assert f.wbcs[a - 1].touching_ids == (b,) and f.wbcs[b - 1].touching_ids == (a,)
        for w in f.wbcs:  # cells outside the planned pairs touch nothing
            assert bool(w.touching_ids) == (w.id in paired)


def test_cells_straddle_border_lines(small_fields: list[SynthField]) -> None:
    for f in small_fields:
        for axis in ("x", "y"):
            for v in SMALL_BORDERS:
                on_line = [w for w in f.wbcs if w.border_line == f"{axis}={v}"]
                assert len(on_line) == 1
                w = on_line[0]
                lo, hi = (w.bbox_x0, w.bbox_x1) if axis == "x" else (w.bbox_y0, w.bbox_y1)
                centre = w.centroid_x if axis == "x" else w.centroid_y
                assert lo < v < hi - 1
                assert abs(centre - v) < 0.1 * (hi - lo)


def test_full_field_defaults(full: SynthField) -> None:
    assert full.image.shape == (1944, 2592, 3)
    lines = {f"x={v}" for v in DEFAULT_BORDER_POSITIONS_PX if v < 2592}
    lines |= {f"y={v}" for v in DEFAULT_BORDER_POSITIONS_PX if v < 1944}
    assert {w.border_line for w in full.wbcs if w.border_line} == lines
    assert len(full.touching_pairs) == 2
    assert 400 < full.n_rbc < 900 and 10 < full.n_platelets < 80


@pytest.mark.parametrize("pixel_size_um", [0.1, 0.25])
def test_sizes_within_design_ranges(pixel_size_um: float) -> None:
    f = generate_field(5, 640, 480, pixel_size_um, n_wbc=4, n_touching_pairs=0)
    tol = 0.6 * pixel_size_um  # pixelisation
    for w in f.wbcs:
        lo, hi = DIAMETER_RANGES_UM[w.cell_type]
        assert lo <= w.diameter_um <= hi
        if not w.touches_edge:
            d = _eq_diameter_um(w.area_px, pixel_size_um)
            assert lo - tol <= d <= hi + tol, (w.cell_type, d)
    areas = ndimage.sum_labels(np.ones_like(f.rbcs), f.rbcs, np.arange(1, f.n_rbc + 1))
    edge = np.unique(np.concatenate([f.rbcs[0], f.rbcs[-1], f.rbcs[:, 0], f.rbcs[:, -1]]))
    inner = np.setdiff1d(np.arange(1, f.n_rbc + 1), edge)
    d_rbc = _eq_diameter_um(areas[inner - 1], pixel_size_um)
    assert RBC_DIAMETER_UM[0] <= np.median(d_rbc) <= RBC_DIAMETER_UM[1]
    assert d_rbc.max() <= RBC_DIAMETER_UM[1] + tol
    p_areas = ndimage.sum_labels(
        np.ones_like(f.platelets), f.platelets, np.arange(1, f.n_platelets + 1)
    )
    d_plt = _eq_diameter_um(p_areas, pixel_size_um)
    assert (d_plt >= PLATELET_DIAMETER_UM[0] - tol).all()
    assert (d_plt <= PLATELET_DIAMETER_UM[1] + tol).all()


def test_image_colours_follow_truth(small: SynthField) -> None:
    img = small.image.astype(float)
    mean = {c: img[small.classes == c].mean(axis=0) for c in range(5)}
    brightness = {c: m.sum() for c, m in mean.items()}
    assert brightness[0] > brightness[1] > brightness[3]
    assert brightness[2] > brightness[3]
    assert mean[1][0] > mean[1][1]  # red cells: red over green (pink/salmon)
    assert mean[3][2] > mean[3][1]  # nuclei: blue over green (purple)
    assert img.std() > 0


def test_stain_styles_vary_and_roundtrip() -> None:
    styles = [StainStyle.random(np.random.default_rng(s)) for s in range(5)]
    assert len({s.rbc for s in styles}) == 5
    for s in styles:
        assert StainStyle.from_dict(json.loads(json.dumps(s.to_dict()))) == s
        assert s.optical_density("nucleus").sum() > s.optical_density("rbc").sum() > 0
    with pytest.raises(ConfigError):
        StainStyle(rbc_pallor=1.5)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_write_and_load_truth(tmp_path: Path, small: SynthField, suffix: str) -> None:
    paths = write_field(small, tmp_path / f"field{suffix}")
    npz, js = truth_paths(tmp_path / f"field{suffix}")
    assert paths == [tmp_path / f"field{suffix}", npz, js]
    assert all(p.is_file() for p in paths)
    assert not any(p.name.lower().endswith(IMAGE_EXTENSIONS) for p in (npz, js))
    back = load_truth(paths[0])
    for name in ("classes", "cells", "nuclei", "rbcs", "platelets"):
        assert np.array_equal(getattr(back, name), getattr(small, name)), name
        assert getattr(back, name).dtype == getattr(small, name).dtype
    assert back.wbcs == small.wbcs and back.stain == small.stain
    assert back.touching_pairs == small.touching_pairs
    assert (back.n_rbc, back.n_platelets, back.seed) == (small.n_rbc, small.n_platelets, 3)
    if suffix == ".png":
        assert np.array_equal(back.image, small.image)
    else:
        assert np.abs(back.image.astype(int) - small.image).mean() < 3.0
    meta = json.loads(js.read_text())
    assert meta["n_wbc"] == 8 and len(meta["wbcs"]) == 8 and meta["image"] == f"field{suffix}"


def test_load_truth_without_sidecar(tmp_path: Path) -> None:
    img = tmp_path / "lonely.png"
    img.write_bytes(b"")
    with pytest.raises(InputError):
        load_truth(img)


def test_write_sample_set(tmp_path: Path) -> None:
    images = write_sample_set(tmp_path, n=2, seed=7, width=640, height=480)
    assert [p.name for p in images] == ["synth_007.jpg", "synth_008.jpg"]
    fields = [load_truth(p) for p in images]
    assert fields[0].stain != fields[1].stain
    assert all(f.n_wbc >= 3 and f.image.shape == (480, 640, 3) for f in fields)


def test_write_large_tiff_small(tmp_path: Path) -> None:
    path = tmp_path / "slide.tif"
    write_large_tiff(path, 3000, 2500, pixel_size_um=0.25, tile=512, n_blocks=2, block_px=1024)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        page = tif.pages.first
        assert page.shape == (2500, 3000, 3)
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (512, 512)
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
        num, den = page.tags["XResolution"].value
        assert num / den == pytest.approx(1e4 / 0.25)
        data = page.asarray()
    assert data.dtype == np.uint8 and 150 < data.mean() < 250
    assert data[:, :, 0].mean() > data[:, :, 1].mean()  # pink red cells dominate


def test_invalid_parameters(tmp_path: Path, small: SynthField) -> None:
    with pytest.raises(ConfigError):
        generate_field(-1, 200, 200)
    with pytest.raises(ConfigError):
        generate_field(0, 200, 200, pixel_size_um=5.0)
    with pytest.raises(ConfigError):
        generate_field(0, 200, 200, n_wbc=1, n_touching_pairs=1)
    with pytest.raises(ConfigError):
        generate_field(0, 200, 200, border_positions_px=(-5,))
    with pytest.raises(ConfigError):
        generate_field(0, 128, 128, n_wbc=40)  # does not fit
    with pytest.raises(ConfigError):
        write_field(small, tmp_path / "field.gif")
    with pytest.raises(ConfigError):
        write_large_tiff(tmp_path / "x.tif", 100, 100, tile=100)
    with pytest.raises(ConfigError):
        write_large_tiff(tmp_path / "x.tif", 100, 100, compression="webp2000")
