"""The pixel-size plausibility guard (:mod:`smearscan.plausibility`).

Synthetic evidence with known values checks the rules and the messages; the
cell stage's median RBC diameter is checked on a painted class map of known
size; real fields (``../shared/data``, skipped where absent) check that a
correct scale passes and a 6.7x wrong one on a wbc-seg jiangxi crop fails.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

from smearscan.cells import run_cell_stage
from smearscan.config import (
    CellsConfig,
    ClassifyConfig,
    OutputConfig,
    ProcessConfig,
    ScaleConfig,
)
from smearscan.errors import ProcessingError, ScaleEstimationError
from smearscan.instances import CYTOPLASM, NUCLEUS, RBC, find_instances
from smearscan.ngff import full_resolution
from smearscan.pipeline import process_slide, stage
from smearscan.plausibility import (
    MIN_RBCS,
    ImplausibleScaleError,
    ScaleEvidence,
    check_scale,
    evidence_from_result,
    scale_problem,
)
from smearscan.resample import array_reader
from smearscan.results import SlideResult
from smearscan.zarr_store import SlideStore, create_slide_store, discard_staged_store

#: Evidence of a normal field at 0.1 µm/px.
PLAUSIBLE = ScaleEvidence(
    pixel_size_um=0.1,
    rbc_diameter_um=7.3,
    rbc_count=40,
    wbc_area_um2=120.0,
    nucleus_area_um2=55.0,
    wbc_count=3,
)


def _with(**changes: object) -> ScaleEvidence:
    values = {**PLAUSIBLE.__dict__, **changes}
    return ScaleEvidence(**values)  # type: ignore[arg-type]


def test_plausible_evidence_passes() -> None:
    assert scale_problem(PLAUSIBLE) is None
    check_scale(PLAUSIBLE)  # does not raise


def test_macrocytes_and_a_huge_monocyte_pass() -> None:
    assert scale_problem(_with(rbc_diameter_um=10.5, wbc_area_um2=450.0, wbc_count=1)) is None


def test_rbcs_of_40_um_name_the_factor_and_the_fix() -> None:
    problem = scale_problem(_with(pixel_size_um=1.0, rbc_diameter_um=40.0, rbc_count=MIN_RBCS))
    assert problem is not None
    assert f"40.0 µm across (n={MIN_RBCS}" in problem
    assert "about 5.3x too large" in problem and "0.188 µm/px" in problem
    assert "--pixel-size" in problem and "[[scale.cameras]]" in problem


def test_tiny_rbcs_say_the_pixel_size_is_too_large_without_a_factor() -> None:
    """On real fields tiny RBCs come from over-magnified ones broken into fragments
    (benchmarks/scale_guard.py: never at x0.5), so they give no factor."""
    problem = scale_problem(_with(pixel_size_um=0.5, rbc_diameter_um=2.5))
    assert problem is not None and "2.5 µm across" in problem
    assert "most likely too large" in problem and "x too" not in problem


def test_no_rbcs_but_a_3000_um2_white_cell_is_a_problem() -> None:
    evidence = _with(
        rbc_diameter_um=None, rbc_count=0, wbc_area_um2=3000.0, nucleus_area_um2=1400.0
    )
    problem = scale_problem(evidence)
    assert problem is not None
    assert "white cell 3000 µm²" in problem and "nucleus 1400 µm²" in problem
    assert "x too" not in problem  # no factor without the RBC ruler


def test_too_little_evidence_is_no_problem() -> None:
    few_rbcs = _with(rbc_diameter_um=40.0, rbc_count=MIN_RBCS - 1, wbc_count=0)
    assert scale_problem(few_rbcs) is None
    nothing = ScaleEvidence(math.nan, None, 0, None, None, 0)
    assert scale_problem(nothing) is None


def test_check_scale_raises_a_scale_error_that_fails_stage_scale() -> None:
    bad = _with(rbc_diameter_um=40.0)
    with pytest.raises(ProcessingError) as info, stage("scale"):
        check_scale(bad)
    assert info.value.stage == "scale" and "x too large" in info.value.message
    cause = info.value.__cause__
    assert isinstance(cause, ImplausibleScaleError) and isinstance(cause, ScaleEstimationError)
    assert cause.evidence == bad


def test_evidence_from_result_takes_medians_of_whole_cells() -> None:
    result = SlideResult(slide="f", path="/f", pixel_size_um=0.2, rbc_count=MIN_RBCS + 2)
    result.pixel_size_method = "given (--pixel-size)"
    result.cells = [
        {"area_um2": 100.0, "nucleus_area_um2": 40.0, "touches_edge": False},
        {"area_um2": 140.0, "nucleus_area_um2": 60.0, "touches_edge": False},
        {"area_um2": 10.0, "nucleus_area_um2": 5.0, "touches_edge": True},
    ]
    evidence = evidence_from_result(result, 7.1)
    assert evidence == ScaleEvidence(
        0.2, 7.1, MIN_RBCS + 2, 120.0, 50.0, 2, "given (--pixel-size)",
        largest_wbc_area_um2=140.0, largest_nucleus_area_um2=60.0,
    )  # fmt: skip
    result.cells = result.cells[2:]  # only a cut cell: it is all there is
    assert evidence_from_result(result, None).wbc_area_um2 == 10.0


def _painted_store(tmp_path: Path, rbc_radius_px: int | None) -> tuple[SlideStore, np.ndarray]:
    """A 0.25 µm/px class map: a grid of 20 RBC discs (None: none) and one WBC; its
    staged store and pixels."""
    classes = np.zeros((400, 400), np.uint8)
    for y in range(40, 400, 80):
        for x in range(40, 320, 80):
            if rbc_radius_px is not None:
                cv2.circle(classes, (x, y), rbc_radius_px, RBC, -1)
    cv2.circle(classes, (360, 200), 24, CYTOPLASM, -1)
    cv2.circle(classes, (360, 200), 14, NUCLEUS, -1)
    store = create_slide_store(
        tmp_path / "r.zarr", "f", height=400, width=400, pixel_size_um=0.25,
        write_image=False, write_probabilities=False,
    )  # fmt: skip
    store.classes[:] = classes
    rgb = np.full((400, 400, 3), 230, np.uint8)
    rgb[classes == RBC] = (220, 150, 150)
    rgb[classes == CYTOPLASM] = (180, 170, 220)
    rgb[classes == NUCLEUS] = (90, 40, 140)
    return store, rgb


def test_cell_stage_returns_the_median_rbc_diameter_in_um(tmp_path: Path) -> None:
    store, rgb = _painted_store(tmp_path, rbc_radius_px=15)  # 7.5 µm across at 0.25 µm/px
    result = SlideResult(slide="f", path="/f")
    try:
        diameter = run_cell_stage(store, array_reader(rgb), 1.0, 0.25, result, CellsConfig())
    finally:
        discard_staged_store(store)
    assert result.rbc_count == 20 and result.wbc_count == 1
    assert diameter is not None and 7.0 <= diameter <= 8.0


def test_cell_stage_without_rbcs_returns_none(tmp_path: Path) -> None:
    store, rgb = _painted_store(tmp_path, rbc_radius_px=None)
    result = SlideResult(slide="f", path="/f")
    try:
        diameter = run_cell_stage(store, array_reader(rgb), 1.0, 0.25, result, CellsConfig())
    finally:
        discard_staged_store(store)
    assert result.rbc_count == 0 and diameter is None


def _real_evidence(path: Path, pixel_size_um: float, tmp_path: Path) -> ScaleEvidence:
    """The evidence of a real field processed at ``pixel_size_um`` with the default model.

    Once the pipeline checks the scale itself, an implausible field fails at
    stage ``scale`` and its evidence travels with the error.
    """
    config = ProcessConfig(
        scale=ScaleConfig(pixel_size_um=pixel_size_um),
        classify=ClassifyConfig(classifier="rules"),
        output=OutputConfig(write_previews=False, write_probabilities=False),
    )
    try:
        result = process_slide(path, config, tmp_path / f"{path.stem}-{pixel_size_um}.zarr")
    except ProcessingError as exc:
        if exc.stage == "scale" and isinstance(exc.__cause__, ImplausibleScaleError):
            return exc.__cause__.evidence
        raise
    classes = full_resolution(zarr.open_group(result.mask_path, mode="r"), "labels/classes")
    model_um = float(result.model_pixel_size_um or 0)
    found = find_instances(lambda w: np.asarray(classes[w.y0 : w.y1, w.x0 : w.x1]),
                           *classes.shape, model_um)  # fmt: skip
    diameter = None if math.isnan(found.rbc_diameter_px) else found.rbc_diameter_px * model_um
    return evidence_from_result(result, diameter)


def test_jiangxi_crop_passes_at_its_scale_and_fails_at_1_um(
    shared_data: Path, tmp_path: Path
) -> None:
    crop = shared_data / "wbc-seg" / "jiangxi" / "images" / "001.png"
    assert scale_problem(_real_evidence(crop, 0.15, tmp_path)) is None
    wrong = _real_evidence(crop, 1.0, tmp_path)  # what the RBC estimate gives this crop
    with pytest.raises(ImplausibleScaleError, match="pass --pixel-size"):
        check_scale(wrong)


#: Real fields at their true pixel size (µm/px): txl-pbc val per source (from its
#: train RBC boxes, benchmarks/cells_txlpbc.py), wbc-seg, pbc-cells, chula-rbc.
REAL_FIELDS = (
    ("txl-pbc/val/images/00dae381-fd8c-5369-ab10-be3e7ef84b2b.jpg", 0.1005),
    ("wbc-seg/cellavision/images/001.png", 0.10),
    ("wbc-seg/jiangxi/images/002.png", 0.15),
    ("pbc-cells/monocyte", 0.10),
    ("pbc-cells/lymphocyte", 0.10),
    ("chula-rbc/images/1.jpg", 0.18),
)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "pixel_size_um"), REAL_FIELDS)
def test_real_fields_at_their_true_scale_pass(
    shared_data: Path, tmp_path: Path, name: str, pixel_size_um: float
) -> None:
    path = shared_data / name
    if path.is_dir():  # a pbc-cells class: its first crop
        path = sorted(path.glob("*.jpg"))[0]
    evidence = _real_evidence(path, pixel_size_um, tmp_path)
    assert scale_problem(evidence) is None, evidence
