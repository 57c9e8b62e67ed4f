"""Weak masks from boxes and points: ellipses, ignored corners and rings, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smearscan.datasets import Box, Point, image_size, read_yolo_boxes
from smearscan.weak_labels import ANY_WBC, IGNORE, resolve_any_wbc, weak_mask

RBC = 1


def test_box_becomes_inscribed_ellipse_with_ignored_corners():
    mask = weak_mask((100, 200), boxes=[Box(40, 20, 100, 80, "rbc")], weak_weight=0.5)
    target, weight = mask.target, mask.weight
    assert target[50, 70] == RBC and weight[50, 70] == 0.5  # centre
    assert target[21, 41] == IGNORE and weight[21, 41] == 0  # corner of the box
    assert target[50, 150] == 0 and weight[50, 150] == 0.5  # outside: weak background
    area = (target == RBC).sum()
    assert area == pytest.approx(np.pi * 30 * 30, rel=0.03)
    assert set(np.unique(target)) == {0, RBC, IGNORE}
    np.testing.assert_array_equal(weight == 0, target == IGNORE)


def test_later_shape_wins_and_wbc_is_a_partial_label():
    boxes = [Box(10, 10, 50, 50, "rbc"), Box(30, 10, 70, 50, "WBC")]
    mask = weak_mask((60, 80), boxes=boxes)
    assert mask.target[30, 50] == ANY_WBC  # overlap: the WBC drawn last
    assert mask.target[30, 15] == RBC
    resolved = resolve_any_wbc(mask)
    assert resolved.target[30, 50] == IGNORE and resolved.weight[30, 50] == 0
    assert resolved.target[30, 15] == RBC and resolved.weight[30, 15] == pytest.approx(0.3)


def test_points_become_discs_of_the_cell_size_with_an_ignored_ring():
    mask = weak_mask((200, 200), points=[Point(100, 100, "blast")], pixel_size_um=0.1)
    radius = 14.0 / 2 / 0.1  # 70 px
    target = mask.target
    assert target[100, 100] == ANY_WBC
    assert target[100, 100 + int(radius * 0.7)] == ANY_WBC
    assert target[100, 100 + int(radius)] == IGNORE  # the uncertain ring
    assert target[100, 100 + int(radius * 1.3)] == 0
    with pytest.raises(ValueError, match="pixel size"):
        weak_mask((10, 10), points=[Point(5, 5, "blast")])


def test_unknown_label_and_bad_weight():
    with pytest.raises(ValueError, match="monocyte"):
        weak_mask((10, 10), boxes=[Box(1, 1, 5, 5, "monocyte")])
    with pytest.raises(ValueError, match="weak_weight"):
        weak_mask((10, 10), weak_weight=0)


def test_txl_pbc_field(shared_data: Path):
    images = shared_data / "txl-pbc" / "val" / "images"
    image = sorted(images.glob("*.jpg"))[0]
    width, height = image_size(image)
    boxes = read_yolo_boxes(images.parent / "labels" / f"{image.stem}.txt", width, height)
    order = {"rbc": 0, "platelet": 1, "wbc": 2}
    mask = weak_mask((height, width), boxes=sorted(boxes, key=lambda b: order[b.label]))
    n_wbc = sum(b.label == "wbc" for b in boxes)
    assert ((mask.target == ANY_WBC).sum() > 0) == (n_wbc > 0)
    assert (mask.target == RBC).mean() > 0.05
    assert mask.weight.dtype == np.float32 and mask.target.shape == (height, width)


def test_partial_label_loss_pushes_towards_the_allowed_set_only():
    import torch

    from smearscan.loss_spec import build_loss
    from smearscan.weak_labels import PartialLabelLoss

    target = torch.tensor([[[ANY_WBC, 1, 0, IGNORE]]])  # (1, 1, 4)
    weight = torch.tensor([[[0.3, 0.3, 0.3, 0.0]]])
    logits = torch.zeros(1, 5, 1, 4, requires_grad=True)
    loss = PartialLabelLoss(build_loss("ce+dice", ignore_index=IGNORE))
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(200):
        optimiser.zero_grad()
        loss(logits, target, weight).backward()
        optimiser.step()
    p = torch.softmax(logits.detach(), dim=1)[0, :, 0]
    assert p[2, 0] + p[3, 0] > 0.95  # the partial pixel: cytoplasm or nucleus
    assert p[1, 1] > 0.95 and p[0, 2] > 0.95  # ordinary pixels as usual
    # without partial pixels it is the wrapped loss exactly
    plain = torch.tensor([[[1, 1, 0, IGNORE]]])
    inner = build_loss("ce+dice", ignore_index=IGNORE)
    x = torch.randn(1, 5, 1, 4)
    assert torch.allclose(PartialLabelLoss(inner)(x, plain, weight), inner(x, plain, weight))


def test_partial_label_loss_needs_the_ignore_index():
    from smearscan.loss_spec import build_loss
    from smearscan.weak_labels import PartialLabelLoss

    with pytest.raises(ValueError, match="must ignore 255"):
        PartialLabelLoss(build_loss("ce+dice"))
