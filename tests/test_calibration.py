"""Pooling one camera's fields into one pixel size (issue #14, point 2): the arithmetic.

The diameters here are drawn, not measured: these tests prove the pooling rules
(equal weight per field, outliers left out and flagged, the fallback to sparse
fields, a reproducible interval, the ledger's copy), never accuracy on smears.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smearscan.calibration import Calibration, FieldRbcs, field_outlier, pool_fields
from smearscan.errors import ScaleEstimationError
from smearscan.ledger import Ledger
from smearscan.ledger_calibration import store_calibration, stored_calibration


def _field(name: str, median_px: float, n: int, seed: int, spread: float = 0.05) -> FieldRbcs:
    rng = np.random.default_rng(seed)
    return FieldRbcs(name, median_px * np.exp(rng.normal(0.0, spread, n)))


def test_pooled_value_and_interval_from_fields_of_one_camera() -> None:
    fields = [_field(f"f{i}", 75.0, 40, i) for i in range(10)]  # 7.5 µm over 75 px
    cal = pool_fields("cam", fields)
    assert cal.pixel_size_um == pytest.approx(0.1, rel=0.01)
    assert cal.ci_low_um <= cal.pixel_size_um <= cal.ci_high_um
    assert cal.ci_high_um / cal.ci_low_um < 1.03  # 400 RBCs: a narrow interval
    assert (cal.fields, cal.rbcs) == (10, 400)
    assert pool_fields("cam", fields) == cal  # the same fields, the same interval


def test_a_crowded_field_does_not_outvote_the_others() -> None:
    """Nine fields at 75 px with 10 RBCs each, one with 1000 RBCs at 60 px (20 % off,
    a misleading field): the camera stays at the nine fields' value."""
    fields = [_field(f"f{i}", 75.0, 10, i) for i in range(9)] + [_field("big", 60.0, 1000, 99)]
    cal = pool_fields("cam", fields)
    assert cal.pixel_size_um == pytest.approx(0.1, rel=0.02)
    assert "big" not in [name for name, _, _ in cal.inputs]  # left out as an outlier
    assert field_outlier(fields[-1], cal) is not None
    assert "SCALE_OUTLIER" in str(field_outlier(fields[-1], cal))
    assert field_outlier(fields[0], cal) is None


def test_fields_with_too_few_rbcs_take_the_camera_value_and_are_never_outliers() -> None:
    fields = [_field("a", 75.0, 30, 1), _field("b", 75.0, 30, 2), _field("few", 40.0, 3, 3)]
    cal = pool_fields("cam", fields)
    assert [name for name, _, _ in cal.inputs] == ["a", "b"]
    assert field_outlier(fields[2], cal) is None


def test_sparse_fields_are_pooled_only_when_there_are_enough_of_them() -> None:
    sparse = [_field(f"s{i}", 50.0, 4, i) for i in range(3)]  # 12 RBCs over 3 fields
    assert pool_fields("cam", sparse).pixel_size_um == pytest.approx(0.15, rel=0.03)
    with pytest.raises(ScaleEstimationError, match=r"too few to calibrate.*--pixel-size"):
        pool_fields("cam", sparse[:2])
    with pytest.raises(ScaleEstimationError, match="camera profile"):
        pool_fields("cam", [FieldRbcs("empty", np.zeros(0))])


def test_the_ledger_keeps_a_camera_calibration_for_the_next_night(tmp_path: Path) -> None:
    cal = pool_fields("640x480 | in", [_field("a", 75.0, 30, 1), _field("b", 80.0, 30, 2)])
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        assert stored_calibration(ledger, "640x480 | in") is None
        store_calibration(ledger, cal)
    with Ledger.open(tmp_path / "l.sqlite") as ledger:  # another night
        again = stored_calibration(ledger, "640x480 | in")
        assert stored_calibration(ledger, "other") is None
    assert isinstance(again, Calibration) and again.origin == "ledger"
    assert again.pixel_size_um == pytest.approx(cal.pixel_size_um)
    assert again.inputs == cal.inputs and (again.fields, again.rbcs) == (2, 60)
    assert "stored in the ledger" in again.method()
