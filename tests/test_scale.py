"""Tests of smearscan.scale (pixel size from the RBC diameter)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from smearscan.errors import ScaleEstimationError
from smearscan.scale import estimate_pixel_size

# txl-pbc val fields where isolated RBCs are found (PBC 363x360, BCCD 640x480, Raabin 575x575).
TXL_IMAGES = (
    "0d0e4c18-853e-5251-a8f8-398fa2d495c6.jpg",
    "1dda0328-25a6-5972-a327-1b4c79dadaf9.jpg",
    "0ebbe2d8-afaa-5efa-b435-e707f66340e1.jpg",
)


def _read(path: Path) -> np.ndarray:
    return cv2.cvtColor(np.asarray(cv2.imread(str(path), cv2.IMREAD_COLOR)), cv2.COLOR_BGR2RGB)


def test_synthetic_discs_give_known_pixel_size() -> None:
    img = np.full((600, 600, 3), (235, 225, 215), np.uint8)
    rng = np.random.default_rng(0)
    radius = 20
    diameter = 2 * radius + 1  # pixels covered by cv2.circle
    for row in range(5):
        for col in range(5):
            center = (60 + col * 115 + int(rng.integers(-5, 6)), 60 + row * 115)
            cv2.circle(img, center, radius, (200, 120, 130), -1, cv2.LINE_AA)
    est = estimate_pixel_size(img)
    assert est.rbc_count >= 20
    assert est.pixel_size_um == pytest.approx(7.5 / diameter, rel=0.05)
    assert "median RBC diameter" in est.method


def test_blank_image_raises() -> None:
    with pytest.raises(ScaleEstimationError, match="--pixel-size"):
        estimate_pixel_size(np.full((256, 256, 3), 230, np.uint8))


@pytest.mark.parametrize("name", TXL_IMAGES)
def test_real_fields_plausible_and_scale_consistent(shared_data: Path, name: str) -> None:
    rgb = _read(shared_data / "txl-pbc" / "val" / "images" / name)
    full = estimate_pixel_size(rgb)
    assert 0.05 <= full.pixel_size_um <= 0.5
    half = estimate_pixel_size(cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    assert half.pixel_size_um / full.pixel_size_um == pytest.approx(2.0, rel=0.10)
