"""Tests of the synthetic smear generator (smearscan.synth)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage
from skimage.measure import regionprops

from smearscan.errors import ConfigError, InputError
from smearscan.models.base import SEMANTIC_CLASSES
from smearscan.synth import (
    BLAST_DIAMETER_UM,
    BLAST_MIN_NC_RATIO,
    BLAST_TYPE,
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
from smearscan.synth.blasts import make_blast_shape
from smearscan.synth.cells import render_wbc
from smearscan.synth.shapes import draw_discs

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


# --- blast-like cells (opt-in) ----------------------------------------------------------

N_BLASTS = 4
SAMPLES = Path(__file__).resolve().parents[1] / "sample_slides"


def _blast_field(seed: int, blasts: int) -> SynthField:
    """A 1200x900 field (0.1 µm/px) with 6 normal WBCs, one pair, 2 border lines, blasts."""
    return generate_field(
        seed, 1200, 900, n_wbc=6, n_touching_pairs=1, border_positions_px=(600,), blasts=blasts
    )


@pytest.fixture(scope="module")
def blast_fields() -> list[SynthField]:
    return [_blast_field(s, N_BLASTS) for s in (21, 22, 23)]


def _median_rbc_diameter_um(f: SynthField) -> float:
    """Median equivalent diameter (µm) of the RBCs not cut by the field border."""
    areas = ndimage.sum_labels(np.ones_like(f.rbcs), f.rbcs, np.arange(1, f.n_rbc + 1))
    edge = np.unique(np.concatenate([f.rbcs[0], f.rbcs[-1], f.rbcs[:, 0], f.rbcs[:, -1]]))
    inner = np.setdiff1d(np.arange(1, f.n_rbc + 1), edge)
    return float(np.median(_eq_diameter_um(areas[inner - 1], f.pixel_size_um)))


def test_blasts_planted_and_recorded(tmp_path: Path, blast_fields: list[SynthField]) -> None:
    for f in blast_fields:
        counts = f.counts_by_type()
        assert counts[BLAST_TYPE] == N_BLASTS and f.n_wbc == 6 + N_BLASTS
        assert set(counts) == {*DIAMETER_RANGES_UM, BLAST_TYPE}
        blasts = [w for w in f.wbcs if w.cell_type == BLAST_TYPE]
        assert all(w.n_lobes == 1 and not w.touching_ids and not w.border_line for w in blasts)
        assert all(not w.touches_edge for w in blasts)
    f = blast_fields[0]
    image, _, js = write_field(f, tmp_path / "blasts.png")
    back = load_truth(image)
    assert back.wbcs == f.wbcs
    assert [w.id for w in back.wbcs if w.cell_type == BLAST_TYPE] == [
        w.id for w in f.wbcs if w.cell_type == BLAST_TYPE
    ]
    meta = json.loads(js.read_text())
    assert meta["wbc_counts"][BLAST_TYPE] == N_BLASTS
    assert sum(w["cell_type"] == BLAST_TYPE for w in meta["wbcs"]) == N_BLASTS


def test_blast_size_nc_ratio_and_round_nucleus(blast_fields: list[SynthField]) -> None:
    """Size 10-18 µm (1.4-2.4 RBC diameters), N:C > 0.8, one round nucleus, a cytoplasm rim."""
    tol = 0.6 * 0.1  # pixelisation, µm
    for f in blast_fields:
        rbc_um = _median_rbc_diameter_um(f)
        for w in (w for w in f.wbcs if w.cell_type == BLAST_TYPE):
            d = float(_eq_diameter_um(w.area_px, f.pixel_size_um))
            assert BLAST_DIAMETER_UM[0] - tol <= d <= BLAST_DIAMETER_UM[1] + tol, d
            assert 1.4 <= d / rbc_um <= 2.4, (d, rbc_um)
            nc = w.nucleus_area_px / w.area_px
            assert BLAST_MIN_NC_RATIO < nc < 0.95, nc  # scant cytoplasm, but some
            nucleus = f.nuclei == w.id
            _, n_parts = ndimage.label(nucleus, structure=np.ones((3, 3)))
            assert n_parts == 1
            props = regionprops(nucleus.astype(np.uint8))[0]
            assert 4 * np.pi * props.area / props.perimeter_crofton**2 >= 0.9
            assert props.axis_minor_length / props.axis_major_length >= 0.8  # round/slightly oval
            # the cytoplasm is a closed rim around the nucleus
            rim = (f.cells == w.id) & ~nucleus
            _, n_rim = ndimage.label(rim, structure=np.ones((3, 3)))
            assert n_rim == 1
            assert not (nucleus & ~ndimage.binary_erosion(f.cells == w.id)).any()


def test_blast_stain_differs_from_lymphocyte(blast_fields: list[SynthField]) -> None:
    """Blast chromatin is paler and more even than a lymphocyte's; the cytoplasm is blue."""
    for f in blast_fields:
        img = f.image.astype(np.float64)
        brightness: dict[str, list[float]] = {BLAST_TYPE: [], "lymphocyte": []}
        spread: dict[str, list[float]] = {BLAST_TYPE: [], "lymphocyte": []}
        for w in f.wbcs:
            if w.cell_type not in brightness:
                continue
            core = ndimage.binary_erosion(f.nuclei == w.id, iterations=4)  # away from blur
            grey = img[core].sum(axis=1)
            brightness[w.cell_type].append(float(grey.mean()))
            q1, q3 = np.percentile(grey, [25, 75])
            spread[w.cell_type].append(float(q3 - q1))
            if w.cell_type == BLAST_TYPE:
                r, g, b = img[(f.cells == w.id) & (f.nuclei != w.id)].mean(axis=0)
                assert b > r and b > g, (r, g, b)  # basophilic (blue) cytoplasm
        assert brightness["lymphocyte"], "every normal type is drawn at least once"
        assert min(brightness[BLAST_TYPE]) > max(brightness["lymphocyte"]), brightness
        assert max(spread[BLAST_TYPE]) < 0.6 * min(spread["lymphocyte"]), spread


def test_blast_nucleoli() -> None:
    """1-3 nucleoli (0.8-1.6 µm) inside the nucleus, paler than the chromatin around them."""
    rng = np.random.default_rng(0)
    ps = 0.1
    counts = set()
    for _ in range(30):
        shape = make_blast_shape(rng, ps)
        assert shape.cell_type == BLAST_TYPE and shape.n_lobes == 1
        assert 1 <= len(shape.nucleoli) <= 3
        counts.add(len(shape.nucleoli))
        nucleus = shape.nucleus_blobs[0].astype(np.float32).reshape(-1, 1, 2)
        for x, y, r in shape.nucleoli:
            assert 0.4 <= r * ps <= 0.8
            assert cv2.pointPolygonTest(nucleus, (float(x), float(y)), True) >= r
        patch = render_wbc(shape, 300.0, 300.0, StainStyle(), ps)
        spots = np.zeros(patch.cell.shape, np.float32)
        draw_discs(spots, shape.nucleoli, 300.0 - patch.x0, 300.0 - patch.y0)
        density = patch.od.sum(axis=2)
        inside = spots > 0
        assert density[inside].mean() < 0.8 * density[patch.nucleus & ~inside].mean()
    assert counts == {1, 2, 3}


def _normal_cells(f: SynthField) -> list[tuple[str, int, float]]:
    """Sorted ``(type, lobes, nominal diameter)`` of the non-blast WBCs of a field."""
    return sorted(
        (w.cell_type, w.n_lobes, w.diameter_um) for w in f.wbcs if w.cell_type != BLAST_TYPE
    )


def test_lymphocytes_unchanged_by_blasts(blast_fields: list[SynthField]) -> None:
    """Adding blasts keeps the normal cells (same types, lobes, sizes) and lymphocyte look."""
    for f in blast_fields:
        plain = _blast_field(f.seed, 0)
        assert BLAST_TYPE not in plain.counts_by_type() and plain.n_wbc == 6
        assert _normal_cells(f) == _normal_cells(plain)
        for w in (w for w in f.wbcs if w.cell_type == "lymphocyte"):
            d = float(_eq_diameter_um(w.area_px, f.pixel_size_um))
            assert 7.0 - 0.06 <= d <= 10.0 + 0.06
            assert w.nucleus_area_px / w.area_px < 0.75


def test_default_output_unchanged_by_blast_option(small: SynthField) -> None:
    again = generate_field(
        3, 800, 600, n_wbc=8, n_touching_pairs=2, border_positions_px=SMALL_BORDERS, blasts=0
    )
    for name in ("image", "classes", "cells", "nuclei", "rbcs", "platelets"):
        assert np.array_equal(getattr(small, name), getattr(again, name)), name
    assert again.metadata() == small.metadata()
    assert BLAST_TYPE not in small.counts_by_type()
    with pytest.raises(ConfigError):
        generate_field(0, 200, 200, blasts=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sample_slides_match_generator(tmp_path: Path, full: SynthField, seed: int) -> None:
    """``sample_slides/synth_NNN.jpg`` and sidecars are the default generator output."""
    image = SAMPLES / f"synth_{seed:03d}.jpg"
    if not image.is_file():
        pytest.skip(f"{image} not present")
    field = full if seed == 0 else generate_field(seed)
    _, npz, js = write_field(field, tmp_path / image.name)
    sample_npz, sample_js = truth_paths(image)
    assert js.read_text(encoding="utf-8") == sample_js.read_text(encoding="utf-8")
    with np.load(npz) as new, np.load(sample_npz) as old:
        assert sorted(new.files) == sorted(old.files)
        for name in new.files:
            assert np.array_equal(new[name], old[name]), name
    with Image.open(image) as img:
        decoded = np.asarray(img.convert("RGB"), dtype=np.int16)
    assert np.abs(decoded - field.image).mean() < 3.0  # JPEG of the same image


def test_cli_synth_blasts_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from smearscan.cli import app

    result = CliRunner().invoke(
        app,
        ["synth", str(tmp_path), "-n", "1", "--width", "800", "--height", "600", "--blasts", "2"],
    )
    assert result.exit_code == 0, result.output
    f = load_truth(tmp_path / "synth_000.jpg")
    assert f.counts_by_type()[BLAST_TYPE] == 2
