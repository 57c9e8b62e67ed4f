"""Tests of smearscan.morphometry: drawn shapes with known geometry and synthetic smears."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage.color import rgb2lab

from smearscan.morphometry import COLUMNS, count_lobes, measure_cells
from smearscan.synth import DIAMETER_RANGES_UM, generate_field

H, W = 200, 240


def _disc(labels: np.ndarray, cx: float, cy: float, r: float, value: int) -> np.ndarray:
    """Paint a disc of radius ``r`` (pixels) with ``value``; return its mask."""
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    labels[mask] = value
    return mask


def _blank() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.full((H, W, 3), 235, np.uint8)
    return image, np.zeros((H, W), np.int32), np.zeros((H, W), np.int32)


def test_disc_geometry_in_px_and_um() -> None:
    image, cells, nuclei = _blank()
    r = 30.0
    _disc(cells, 100, 100, r, 1)
    _disc(nuclei, 100, 100, 12, 1)
    row = measure_cells(image, cells, nuclei, 0.5).iloc[0]
    assert row["area_px"] == pytest.approx(math.pi * r**2, rel=0.01)
    assert row["perimeter_px"] == pytest.approx(2 * math.pi * r, rel=0.04)
    assert row["equivalent_diameter_px"] == pytest.approx(2 * r, rel=0.01)
    assert 0.93 < row["circularity"] <= 1.0
    assert row["eccentricity"] < 0.1
    assert row["solidity"] > 0.97
    assert row["area_um2"] == pytest.approx(row["area_px"] * 0.25)
    assert row["equivalent_diameter_um"] == pytest.approx(2 * r * 0.5, rel=0.01)
    assert row["perimeter_um"] == pytest.approx(row["perimeter_px"] * 0.5)
    assert row["nucleus_lobes"] == 1
    assert row["size_vs_rbc"] != row["size_vs_rbc"]  # NaN without an RBC diameter


def test_source_pixels_per_pixel_scales_px_columns_only() -> None:
    image, cells, nuclei = _blank()
    _disc(cells, 100, 100, 30, 1)
    _disc(nuclei, 100, 100, 12, 1)
    base = measure_cells(image, cells, nuclei, 0.5, rbc_diameter_px=15.0).iloc[0]
    scaled = measure_cells(
        image, cells, nuclei, 0.5, source_pixels_per_pixel=2.5, rbc_diameter_px=15.0
    ).iloc[0]
    for name in ("perimeter_px", "equivalent_diameter_px", "major_axis_px", "minor_axis_px"):
        assert scaled[name] == pytest.approx(base[name] * 2.5)
    for name in ("area_px", "nucleus_area_px", "cytoplasm_area_px"):
        assert scaled[name] == pytest.approx(base[name] * 2.5**2)
    for name in ("area_um2", "perimeter_um", "equivalent_diameter_um", "nc_ratio", "size_vs_rbc"):
        assert scaled[name] == pytest.approx(base[name])
    assert base["size_vs_rbc"] == pytest.approx(60.0 / 15.0, rel=0.01)


def test_ellipse_axes_and_eccentricity() -> None:
    image, cells, nuclei = _blank()
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (120, 100), (60, 30), 30, 0, 360, 1, -1)
    cells[mask > 0] = 5
    row = measure_cells(image, cells, nuclei, 0.2).iloc[0]
    assert row["cell_id"] == 5
    assert row["major_axis_px"] == pytest.approx(120, rel=0.02)
    assert row["minor_axis_px"] == pytest.approx(60, rel=0.03)
    assert row["major_axis_um"] == pytest.approx(120 * 0.2, rel=0.02)
    assert row["eccentricity"] == pytest.approx(math.sqrt(1 - 0.5**2), abs=0.01)


def test_nc_ratio_is_nucleus_over_cell_area() -> None:
    image, cells, nuclei = _blank()
    cell = _disc(cells, 100, 100, 40, 1)
    nucleus = _disc(nuclei, 100, 100, 20, 1)
    row = measure_cells(image, cells, nuclei, 0.25).iloc[0]
    assert row["nc_ratio"] == pytest.approx(nucleus.sum() / cell.sum())
    assert row["nc_ratio"] == pytest.approx(0.25, rel=0.02)
    assert row["nucleus_area_px"] == nucleus.sum()
    assert row["cytoplasm_area_px"] == cell.sum() - nucleus.sum()
    assert row["nucleus_circularity"] > 0.9


def test_touches_edge_for_a_cut_cell() -> None:
    image, cells, nuclei = _blank()
    _disc(cells, 10, 100, 30, 1)  # cut by the left border
    _disc(cells, 150, 100, 30, 2)
    df = measure_cells(image, cells, nuclei, 0.25)
    assert df["touches_edge"].tolist() == [True, False]
    assert df["shape_reliable"].tolist() == [False, True]


def test_colour_means_equal_painted_colours() -> None:
    image, cells, nuclei = _blank()
    cell = _disc(cells, 100, 100, 40, 1)
    nucleus = _disc(nuclei, 100, 100, 20, 1)
    image[cell] = (200, 180, 220)
    image[nucleus] = (80, 40, 120)
    row = measure_cells(image, cells, nuclei, 0.25).iloc[0]
    for region, rgb in (("nucleus", (80, 40, 120)), ("cytoplasm", (200, 180, 220))):
        lab = rgb2lab(np.array([[rgb]], np.uint8))[0, 0]
        for i, ch in enumerate("rgb"):
            assert row[f"{region}_mean_{ch}"] == pytest.approx(rgb[i])
            assert row[f"{region}_std_{ch}"] == pytest.approx(0, abs=1e-6)
            assert row[f"{region}_mean_lab_{ch.replace('r', 'l').replace('g', 'a')}"] == (
                pytest.approx(lab[i], abs=1e-6)
            )


def test_glcm_homogeneity_higher_for_flat_nucleus() -> None:
    image, cells, nuclei = _blank()
    rng = np.random.default_rng(0)
    flat_cell, noisy_cell = _disc(cells, 60, 100, 40, 1), _disc(cells, 170, 100, 40, 2)
    flat_nuc, noisy_nuc = _disc(nuclei, 60, 100, 25, 1), _disc(nuclei, 170, 100, 25, 2)
    image[flat_cell | noisy_cell] = (200, 180, 220)
    image[flat_nuc] = (90, 50, 130)
    noise = rng.integers(-60, 60, size=(int(noisy_nuc.sum()), 1))
    image[noisy_nuc] = np.clip(np.array([90, 50, 130]) + noise, 0, 255).astype(np.uint8)
    df = measure_cells(image, cells, nuclei, 0.25).set_index("cell_id")
    assert df.loc[1, "glcm_homogeneity"] > df.loc[2, "glcm_homogeneity"]
    assert df.loc[1, "glcm_contrast"] == pytest.approx(0.0)
    assert df.loc[2, "glcm_contrast"] > 1.0
    assert df.loc[1, "glcm_energy"] == pytest.approx(1.0)


def test_cell_without_nucleus_and_row_order() -> None:
    image, cells, nuclei = _blank()
    _disc(cells, 60, 100, 30, 7)
    _disc(cells, 170, 100, 30, 3)
    _disc(nuclei, 170, 100, 12, 3)
    df = measure_cells(image, cells, nuclei, 0.25)
    assert df["cell_id"].tolist() == [3, 7]
    empty = df.iloc[1]
    assert empty["nc_ratio"] == 0.0
    assert empty["nucleus_area_px"] == 0
    assert empty["nucleus_lobes"] == 0
    for name in ("nucleus_circularity", "nucleus_mean_r", "nucleus_std_lab_l", "glcm_contrast"):
        assert np.isnan(empty[name])
    assert not np.isnan(df.iloc[0]["glcm_contrast"])


def test_empty_input_gives_empty_frame_with_columns() -> None:
    image, cells, nuclei = _blank()
    df = measure_cells(image, cells, nuclei, 0.25)
    assert isinstance(df, pd.DataFrame)
    assert df.empty
    assert tuple(df.columns) == COLUMNS
    assert df["cell_id"].dtype == np.int64
    assert df["touches_edge"].dtype == bool
    image[:] = 0
    cells[5, 5] = 1
    assert tuple(measure_cells(image, cells, nuclei, 0.25).columns) == COLUMNS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": np.zeros((H, W), np.uint8)}, "RGB"),
        ({"image": np.zeros((H, W, 3), np.float32)}, "uint8"),
        ({"cells": np.zeros((H, W + 1), np.int32)}, "cells must have shape"),
        ({"nuclei": np.zeros((H, W), np.float32)}, "integer"),
        ({"pixel_size_um": 0.0}, "pixel_size_um"),
        ({"source_pixels_per_pixel": float("nan")}, "source_pixels_per_pixel"),
        ({"rbc_diameter_px": -3.0}, "rbc_diameter_px"),
    ],
)
def test_invalid_inputs_raise(change: dict[str, object], message: str) -> None:
    image, cells, nuclei = _blank()
    kwargs: dict[str, object] = {
        "image": image,
        "cells": cells,
        "nuclei": nuclei,
        "pixel_size_um": 0.25,
        "rbc_diameter_px": None,
    }
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        measure_cells(**kwargs)  # type: ignore[arg-type]


def test_count_lobes_on_drawn_shapes() -> None:
    mask = np.zeros((80, 120), np.uint8)
    assert count_lobes(mask > 0) == 0
    cv2.circle(mask, (30, 40), 14, 1, -1)
    assert count_lobes(mask > 0) == 1
    cv2.circle(mask, (80, 40), 12, 1, -1)
    cv2.line(mask, (30, 40), (80, 40), 1, 2)  # thin chromatin strand
    assert count_lobes(mask > 0) == 2
    oval = np.zeros((80, 120), np.uint8)
    cv2.ellipse(oval, (60, 40), (35, 20), 0, 0, 360, 1, -1)
    assert count_lobes(oval > 0) == 1


@pytest.fixture(scope="module")
def synthetic_rows() -> pd.DataFrame:
    """Measured rows of a few synthetic fields (truth masks) joined with their truth."""
    frames = []
    for seed in (0, 1, 2):
        field = generate_field(seed, 1200, 900, 0.25)
        df = measure_cells(field.image, field.cells, field.nuclei, field.pixel_size_um)
        truth = pd.DataFrame(
            {"cell_id": [w.id for w in field.wbcs], "cell_type": [w.cell_type for w in field.wbcs]}
        )
        truth["n_lobes"] = [w.n_lobes for w in field.wbcs]
        truth["truth_edge"] = [w.touches_edge for w in field.wbcs]
        frames.append(df.merge(truth, on="cell_id", validate="one_to_one"))
    return pd.concat(frames, ignore_index=True)


def test_synthetic_lobe_counts(synthetic_rows: pd.DataFrame) -> None:
    rows = synthetic_rows
    lymph = rows[rows["cell_type"] == "lymphocyte"]
    neut = rows[rows["cell_type"] == "neutrophil"]
    assert len(lymph) >= 5 and len(neut) >= 5
    assert (lymph["nucleus_lobes"] == 1).all()
    assert neut["nucleus_lobes"].between(2, 5).mean() >= 0.9
    agreement = (rows["nucleus_lobes"] == rows["n_lobes"]).mean()
    assert agreement >= 0.9, f"lobe agreement {agreement:.2f}"


def test_synthetic_sizes_and_edges(synthetic_rows: pd.DataFrame) -> None:
    rows = synthetic_rows
    assert (rows["touches_edge"] == rows["truth_edge"]).all()
    inside = rows[~rows["touches_edge"]]
    for cell_type, group in inside.groupby("cell_type"):
        lo, hi = DIAMETER_RANGES_UM[str(cell_type)]
        assert group["equivalent_diameter_um"].between(lo - 0.3, hi + 0.3).all(), cell_type
    lymph = inside[inside["cell_type"] == "lymphocyte"]
    neut = inside[inside["cell_type"] == "neutrophil"]
    assert lymph["nc_ratio"].median() > neut["nc_ratio"].median()
    assert (rows["circularity"].between(0, 1) & rows["solidity"].between(0, 1)).all()
