"""Dice through the product path, on the expert masks of wbc-seg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smearscan.evaluation import WBC_SEG_PIXEL_SIZE_UM, dice, evaluate_mask_set, snap_mask_levels
from smearscan.segmenters import ClassicalSegmenter


def test_dice_and_mask_levels():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    b = np.zeros((10, 10), bool)
    b[:, :5] = True
    assert dice(a, a) == 1.0
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    snapped = snap_mask_levels(np.array([[0, 60, 70, 127, 200, 254]], np.uint8))
    assert snapped.tolist() == [[0, 0, 128, 128, 255, 255]]


@pytest.mark.parametrize("dataset", ["jiangxi", "cellavision"])
def test_classical_nucleus_dice_on_expert_masks(shared_data: Path, dataset: str):
    scores = list(
        evaluate_mask_set(
            ClassicalSegmenter(),
            shared_data / "wbc-seg" / dataset,
            WBC_SEG_PIXEL_SIZE_UM[dataset],
            limit=12,
        )
    )
    assert len(scores) == 12
    # measured on all images: 0.91 mean nucleus Dice on both sets (see the README)
    assert np.mean([s.nucleus_dice for s in scores]) > 0.85
