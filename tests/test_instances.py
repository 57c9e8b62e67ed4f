"""Instance stage on exact synthetic class maps: counts, IoU, splits, lobes, ownership."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from smearscan.config import CellsConfig
from smearscan.errors import ConfigError
from smearscan.instances import (
    CYTOPLASM,
    NUCLEUS,
    find_instances,
    paint_labels,
    wbc_labels,
)
from smearscan.synth import generate_field
from smearscan.tiling import Window

MODEL_UM = 0.25
FACTOR = 0.1 / MODEL_UM  # synthetic fields at 0.1 µm/px -> model scale


@pytest.fixture(scope="module", params=[0, 2, 5])
def truth_field(request):
    """A full-size synthetic field and its truth maps at the model scale."""
    field = generate_field(request.param, 2592, 1944, 0.1)

    def resize(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, None, fx=FACTOR, fy=FACTOR, interpolation=cv2.INTER_NEAREST)

    return field, resize(field.classes), resize(field.cells)


def _find(classes: np.ndarray, **config):
    return find_instances(
        lambda w: classes[w.y0 : w.y1, w.x0 : w.x1],
        *classes.shape,
        MODEL_UM,
        CellsConfig(**config),
    )


def _whole(classes: np.ndarray) -> Window:
    return Window(0, classes.shape[0], 0, classes.shape[1])


def test_every_wbc_found_once_with_high_iou(truth_field):
    field, classes, truth_cells = truth_field
    found = _find(classes)
    assert len(found.cells) == len(field.wbcs)
    labels = paint_labels(found.cells, _whole(classes))
    for wbc in field.wbcs:
        true = truth_cells == wbc.id
        ids, counts = np.unique(labels[true], return_counts=True)
        best = ids[np.argmax(np.where(ids > 0, counts, 0))]
        pred = labels == best
        assert (true & pred).sum() / (true | pred).sum() >= 0.8, wbc


def test_touching_pairs_split_and_lobes_kept_together(truth_field):
    field, classes, truth_cells = truth_field
    labels = paint_labels(_find(classes).cells, _whole(classes))
    by_id = {}
    for wbc in field.wbcs:
        nucleus = (truth_cells == wbc.id) & (classes == NUCLEUS)
        ids = np.unique(labels[nucleus])
        assert len(ids[ids > 0]) == 1, f"{wbc.cell_type} nucleus split over {ids}"
        by_id[wbc.id] = ids[ids > 0][0]
    assert field.touching_pairs
    for a, b in field.touching_pairs:
        assert by_id[a] != by_id[b]


def test_result_does_not_depend_on_the_window_grid(truth_field):
    _, classes, _ = truth_field
    reference = _find(classes, window_px=8192)
    ref_labels = paint_labels(reference.cells, _whole(classes))
    for window_px in (600, 1000):
        other = _find(classes, window_px=window_px)
        np.testing.assert_array_equal(paint_labels(other.cells, _whole(classes)), ref_labels)
        assert len(other.rbc_centres) == len(reference.rbc_centres)
        assert len(other.platelet_centres) == len(reference.platelet_centres)


def test_rbc_and_platelet_counts(truth_field):
    field, classes, _ = truth_field
    found = _find(classes)
    assert abs(len(found.rbc_centres) - field.n_rbc) <= 0.12 * field.n_rbc
    assert len(found.platelet_centres) == field.n_platelets
    assert 7.0 / MODEL_UM * 0.8 < found.rbc_diameter_px < 8.0 / MODEL_UM


def test_debris_is_not_a_cell():
    classes = np.zeros((200, 200), np.uint8)
    cv2.circle(classes, (60, 60), 20, CYTOPLASM, -1)
    cv2.circle(classes, (60, 60), 12, NUCLEUS, -1)  # a lymphocyte-sized cell
    cv2.circle(classes, (150, 150), 3, NUCLEUS, -1)  # a 1.5 µm purple speck
    cv2.circle(classes, (150, 60), 15, CYTOPLASM, -1)  # cytoplasm-coloured, no nucleus
    labels = wbc_labels(classes, MODEL_UM, CellsConfig())
    assert set(np.unique(labels)) == {0, 1}
    assert labels[60, 60] == 1 and labels[150, 150] == 0 and labels[60, 150] == 0


def test_invalid_config():
    with pytest.raises(ConfigError):
        CellsConfig(min_cell_area_um2=0)
    with pytest.raises(ConfigError):
        CellsConfig(platelet_area_um2=(5.0, 1.0))
