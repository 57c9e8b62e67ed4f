"""Segmentation metrics on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smearscan.metrics import ConfusionMatrix, dice_score, iou_score

# 2x3 maps over 3 classes.
# truth  0 0 1      pred  0 1 1
#        2 2 1            2 0 1
# Pixel pairs (truth, pred): (0,0) (0,1) (1,1) (2,2) (2,0) (1,1)
TRUTH = np.array([[0, 0, 1], [2, 2, 1]], np.int64)
PRED = np.array([[0, 1, 1], [2, 0, 1]], np.int64)
EXPECTED = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]], np.int64)


def _cm(**kwargs) -> ConfusionMatrix:
    cm = ConfusionMatrix(3, ("bg", "a", "b"), **kwargs)
    cm.update(PRED, TRUTH)
    return cm


def test_confusion_matrix_counts_numpy_and_torch():
    assert np.array_equal(_cm().matrix, EXPECTED)
    cm = ConfusionMatrix(3)
    cm.update(torch.from_numpy(PRED).to(torch.uint8), torch.from_numpy(TRUTH))
    assert np.array_equal(cm.matrix, EXPECTED)
    assert cm.matrix.dtype == np.int64


def test_per_class_scores_by_hand():
    cm = _cm()
    # class 0: TP 1, FP 1 (truth 2 -> 0), FN 1 (-> 1); class 1: TP 2, FP 1, FN 0;
    # class 2: TP 1, FP 0, FN 1.
    np.testing.assert_allclose(cm.dice(), [2 / 4, 4 / 5, 2 / 3])
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(cm.precision(), [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(cm.recall(), [1 / 2, 1.0, 1 / 2])
    np.testing.assert_allclose(cm.f1(), cm.dice())
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    assert cm.dice().dtype == np.float64 and cm.dice().shape == (3,)


def test_summary_keys_and_means():
    s = _cm().summary()
    assert s["dice/a"] == pytest.approx(0.8)
    assert s["iou/b"] == pytest.approx(0.5)
    assert s["recall/bg"] == pytest.approx(0.5)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)
    assert s["mean_dice"] == pytest.approx((4 / 5 + 2 / 3) / 2)  # background left out
    assert s["mean_iou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    with_bg = _cm().summary(include_background=True)
    assert with_bg["mean_dice"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert all(isinstance(v, float) for v in s.values())
    assert set(ConfusionMatrix(2).summary()) >= {"dice/class_0", "dice/class_1", "mean_dice"}


def test_nan_for_undefined_classes():
    cm = ConfusionMatrix(4)
    cm.update(np.array([[0, 1]]), np.array([[0, 2]]))
    dice = cm.dice()
    assert dice[0] == 1.0 and dice[1] == 0.0 and dice[2] == 0.0
    assert math.isnan(dice[3]) and math.isnan(cm.iou()[3])  # class 3 in neither
    assert math.isnan(cm.precision()[2])  # never predicted
    assert math.isnan(cm.recall()[1])  # never true
    assert cm.summary()["mean_dice"] == 0.0  # NaN class 3 skipped, background excluded
    empty = ConfusionMatrix(3)
    assert np.isnan(empty.dice()).all() and math.isnan(empty.pixel_accuracy())
    assert math.isnan(empty.summary()["mean_dice"])


def test_mask_and_ignore_index():
    target = TRUTH.copy()
    target[0, 1] = 255  # the (0, 1) pair is dropped
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(PRED, target)
    expected = EXPECTED.copy()
    expected[0, 1] -= 1
    assert np.array_equal(cm.matrix, expected)

    mask = np.ones_like(TRUTH, bool)
    mask[1, 1] = False  # drops the (2, 0) pair
    cm_mask = ConfusionMatrix(3)
    cm_mask.update(torch.from_numpy(PRED), torch.from_numpy(TRUTH), torch.from_numpy(mask))
    expected = EXPECTED.copy()
    expected[2, 0] -= 1
    assert np.array_equal(cm_mask.matrix, expected)
    assert cm_mask.n_pixels == 5


def test_accumulation_equals_concatenation_and_reset():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, (4, 8, 9))
    truth = rng.integers(0, 5, (4, 8, 9))
    split = ConfusionMatrix(5)
    split.update(pred[:1], truth[:1])
    split.update(torch.from_numpy(pred[1:]), torch.from_numpy(truth[1:]))
    whole = ConfusionMatrix(5)
    whole.update(pred, truth)
    assert np.array_equal(split.matrix, whole.matrix)
    assert whole.n_pixels == pred.size
    whole.reset()
    assert whole.n_pixels == 0


@pytest.mark.parametrize("as_torch", [False, True])
def test_update_rejects_bad_input(as_torch: bool):
    def conv(a: np.ndarray) -> np.ndarray | torch.Tensor:
        return torch.from_numpy(a) if as_torch else a

    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="differ"):
        cm.update(conv(PRED), conv(TRUTH[:1]))
    with pytest.raises(ValueError, match="target classes"):
        cm.update(conv(PRED), conv(TRUTH + 1))  # 255 without ignore_index is also caught
    with pytest.raises(ValueError, match="predicted classes"):
        cm.update(conv(PRED - 1), conv(TRUTH))
    assert cm.n_pixels == 0
    with pytest.raises(ValueError):
        ConfusionMatrix(3, ("only", "two"))


def test_binary_mask_scores():
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 px
    b = np.zeros((4, 4), bool)
    b[:, :2] = True  # 8 px, 4 shared
    assert dice_score(a, b) == pytest.approx(0.5)
    assert iou_score(a, b) == pytest.approx(4 / 12)
    assert dice_score(a, a) == 1.0 and iou_score(a, a) == 1.0
    empty = np.zeros_like(a)
    assert dice_score(empty, empty) == 1.0 and iou_score(empty, empty) == 1.0
    assert dice_score(a, empty) == 0.0 and iou_score(empty, a) == 0.0
    assert dice_score(a.astype(np.uint8) * 255, b) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        dice_score(a, a[:2])
