"""Image-quality measures: real fields pass, the same fields blurred or faded are flagged."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from smearscan.config import ReviewConfig
from smearscan.flags import quality_problems
from smearscan.models.base import calibrate_if_supported
from smearscan.quality import (
    QUALITY_PIXEL_SIZE_UM,
    QualityMeasures,
    measure_quality,
    sample_windows,
    to_quality_scale,
)
from smearscan.registry import load_model
from smearscan.resample import resample_image
from smearscan.scale import estimate_pixel_size
from smearscan.segmentation import segment_array
from smearscan.stitching import argmax_classes

SAMPLES = Path(__file__).resolve().parents[1] / "sample_slides"
BCCD = SAMPLES / "bccd_03268486-3908-5ee2-813d-356b854dd0af.jpg"
#: Real TXL-PBC val fields of two more sources: BCD (416x416) and PBC (360x363).
TXL_FIELDS = (
    "txl-pbc/val/images/16333d4e-1517-54ec-bf3f-03369fcc1893.jpg",
    "txl-pbc/val/images/03f5b89f-538f-5c2a-b2c6-3024e2cf9c5d.jpg",
)


@pytest.fixture(scope="module")
def model():
    return load_model("unet-v1")


def _rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def blur(rgb: np.ndarray, sigma_um: float, pixel_size_um: float) -> np.ndarray:
    """Defocus stand-in: Gaussian blur of ``sigma_um`` micrometres."""
    return cv2.GaussianBlur(rgb, (0, 0), sigma_um / pixel_size_um)


def fade(rgb: np.ndarray, keep: float) -> np.ndarray:
    """Faded stain: optical density against the slide's white scaled by ``keep``."""
    white = np.percentile(rgb.reshape(-1, 3), 99, axis=0).clip(1, 255)
    ratio = np.clip((rgb.astype(np.float32) + 1) / (white + 1), 1e-3, 1)
    return np.clip((white + 1) * ratio**keep - 1, 0, 255).astype(np.uint8)


def quality_of(rgb: np.ndarray, pixel_size_um: float, model) -> QualityMeasures:
    """Segment a source-scale field with ``model`` and measure it, as the pipeline does."""
    image = resample_image(rgb, pixel_size_um / model.spec.input_pixel_size_um)
    calibrate_if_supported(model, image)
    classes = argmax_classes(segment_array(image, model, device="cpu"))
    return measure_quality(image, classes, model.spec.input_pixel_size_um)


def _check_field(rgb: np.ndarray, model) -> None:
    config = ReviewConfig()
    pixel_size = estimate_pixel_size(rgb).pixel_size_um
    sharp = quality_of(rgb, pixel_size, model)
    assert quality_problems(sharp.as_dict(), config) == [], sharp
    assert sharp.pixel_size_um == QUALITY_PIXEL_SIZE_UM and sharp.smear_fraction > 0.2
    blurred = quality_of(blur(rgb, 1.0, pixel_size), pixel_size, model)
    assert any("out of focus" in p for p in quality_problems(blurred.as_dict(), config)), blurred
    assert blurred.focus_laplacian_var < sharp.focus_laplacian_var / 5
    faded = quality_of(fade(rgb, 0.3), pixel_size, model)
    assert any("faint" in p for p in quality_problems(faded.as_dict(), config)), faded


def test_sample_field_sharp_blurred_faded(model):
    _check_field(_rgb(BCCD), model)


@pytest.mark.parametrize("name", TXL_FIELDS)
def test_real_fields_sharp_blurred_faded(shared_data: Path, name: str, model):
    _check_field(_rgb(shared_data / name), model)


def test_no_smear_no_nuclei_gives_nan_not_an_error():
    rgb = np.full((300, 300, 3), 230, np.uint8)
    q = measure_quality(rgb, np.zeros((300, 300), np.uint8), 0.2)
    assert np.isnan(q.focus_laplacian_var) and np.isnan(q.stain_od) and np.isnan(q.nucleus_od)
    assert q.smear_fraction == 0 and quality_problems(q.as_dict(), ReviewConfig()) == []


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="do not match"):
        measure_quality(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11), np.uint8), 0.2)


def test_windows_are_bounded_and_inside():
    big = sample_windows(40000, 30000, 1024, 9)
    assert 1 <= len(big) <= 9
    assert all(0 <= w.y0 < w.y1 <= 40000 and 0 <= w.x0 < w.x1 <= 30000 for w in big)
    assert all(w.height == w.width == 1024 for w in big)
    small = sample_windows(700, 1300, 1024, 9)
    assert sum(w.height * w.width for w in small) == 700 * 1300  # covered whole


def test_other_model_scales_are_brought_to_the_quality_scale():
    rgb = np.zeros((100, 80, 3), np.uint8)
    scaled, classes = to_quality_scale(rgb, np.zeros((100, 80), np.uint8), 0.25)
    assert scaled.shape == (125, 100, 3) and classes.shape == (125, 100)
    same, _ = to_quality_scale(rgb, np.zeros((100, 80), np.uint8), QUALITY_PIXEL_SIZE_UM)
    assert same is rgb
