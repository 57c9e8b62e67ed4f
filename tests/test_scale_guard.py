"""The plausibility guard of the pixel size (issue #14, point 3): its rules on known
evidence, and a real crop at a 7x wrong pixel size failing at stage ``scale``."""

from __future__ import annotations

from pathlib import Path

import pytest

from smearscan.config import CameraProfile, ProcessConfig
from smearscan.errors import ProcessingError
from smearscan.pipeline import process_slide
from smearscan.plausibility import ImplausibleScaleError, ScaleEvidence, check_scale, scale_problem

JIANGXI = Path(__file__).resolve().parents[2] / "shared" / "data" / "wbc-seg" / "jiangxi"


def _evidence(**values: object) -> ScaleEvidence:
    base: dict[str, object] = dict(
        pixel_size_um=0.1, rbc_diameter_um=7.4, rbc_count=60, wbc_area_um2=110.0,
        nucleus_area_um2=45.0, wbc_count=3, largest_wbc_area_um2=160.0,
        largest_nucleus_area_um2=70.0,
    )  # fmt: skip
    base.update(values)
    return ScaleEvidence(**base)  # type: ignore[arg-type]


def test_cells_of_physiological_size_pass() -> None:
    assert scale_problem(_evidence()) is None
    assert scale_problem(_evidence(rbc_diameter_um=None, rbc_count=0, wbc_count=0,
                                   wbc_area_um2=None, nucleus_area_um2=None,
                                   largest_wbc_area_um2=None,
                                   largest_nucleus_area_um2=None)) is None  # fmt: skip


def test_red_cells_twice_too_large_name_the_factor_and_what_to_do() -> None:
    problem = scale_problem(_evidence(rbc_diameter_um=30.0))
    assert problem is not None
    assert "4.0x too large" in problem and "--pixel-size" in problem
    assert "[[scale.cameras]]" in problem
    with pytest.raises(ImplausibleScaleError):
        check_scale(_evidence(rbc_diameter_um=30.0))


def test_a_few_clumped_red_cells_are_not_evidence() -> None:
    assert scale_problem(_evidence(rbc_diameter_um=13.1, rbc_count=8)) is None


def test_one_giant_white_cell_gives_a_wrong_scale_away_whatever_the_median() -> None:
    problem = scale_problem(_evidence(largest_wbc_area_um2=4127.0))
    assert problem is not None and "largest white cell 4127 µm²" in problem
    assert scale_problem(_evidence(largest_nucleus_area_um2=2275.0)) is not None


@pytest.mark.skipif(not JIANGXI.is_dir(), reason="../shared/data/wbc-seg/jiangxi not present")
def test_a_real_crop_at_7x_its_pixel_size_fails_at_scale_and_at_its_own_passes(
    tmp_path: Path,
) -> None:
    """jiangxi 010.png (0.15 µm/px) with a camera profile of 1.06 µm/px, the value the
    pooled estimate gave these crops: it fails at stage scale, never ok."""
    crop = JIANGXI / "images" / "010.png"
    wrong = CameraProfile(name="wrong", pixel_size_um=1.06, glob="**")
    config = ProcessConfig().with_overrides(scale={"cameras": (wrong,)})
    with pytest.raises(ProcessingError) as failed:
        process_slide(crop, config, tmp_path / "m.zarr")
    assert failed.value.stage == "scale" and "camera profile 'wrong'" in failed.value.message
    right = CameraProfile(name="right", pixel_size_um=0.15, glob="**")
    config = ProcessConfig().with_overrides(scale={"cameras": (right,)})
    assert process_slide(crop, config, tmp_path / "m.zarr").status == "ok"
