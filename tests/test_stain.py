"""Tests of smearscan.stain (colour features and calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from smearscan.errors import ProcessingError
from smearscan.stain import DEFAULT_CALIBRATION, calibrate_stain, stain_features

BACKGROUND = (235, 225, 215)
RBC = (215, 150, 160)
NUCLEUS = (90, 50, 140)


def _field(with_wbc: bool) -> np.ndarray:
    img = np.full((200, 200, 3), BACKGROUND, np.uint8)
    for y in range(20, 200, 45):
        for x in range(20, 200, 45):
            img[y : y + 28, x : x + 28] = RBC
    if with_wbc:
        img[80:120, 80:120] = NUCLEUS
    return img


def test_features_rank_nucleus_above_rbc_above_background() -> None:
    img = np.array([[BACKGROUND, RBC, NUCLEUS]], np.uint8).repeat(5, 0).repeat(5, 1)
    feats = stain_features(img)
    score = feats.nucleus_score[2, 2::5]
    dark = feats.darkness[2, 2::5]
    assert score[2] > score[1] > score[0] - 0.05
    assert dark[2] > dark[1] > dark[0]
    assert feats.eosin[2, 7] > feats.eosin[2, 2]


def test_calibration_separates_nucleus_from_rbc() -> None:
    cal = calibrate_stain(_field(with_wbc=True))
    feats = stain_features(np.array([[RBC, NUCLEUS]], np.uint8).repeat(5, 0).repeat(5, 1))
    assert feats.nucleus_score[2, 2] < cal.nucleus_threshold < feats.nucleus_score[2, 7]


def test_calibration_without_wbc_keeps_rbcs_below_threshold() -> None:
    cal = calibrate_stain(_field(with_wbc=False))
    rbc_score = float(stain_features(np.full((5, 5, 3), RBC, np.uint8)).nucleus_score[2, 2])
    assert "fallback" in cal.source
    assert cal.nucleus_threshold > rbc_score


def test_uniform_sample_uses_defaults() -> None:
    assert calibrate_stain(np.full((64, 64, 3), 200, np.uint8)) == DEFAULT_CALIBRATION


def test_bad_input_raises() -> None:
    with pytest.raises(ProcessingError):
        calibrate_stain(np.zeros((10, 10), np.uint8))
