"""Dataset layouts, scaling to the model and the splits of train_data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from smearscan.datasets import Box
from smearscan.registry import load_model
from smearscan.train_data import (
    DatasetError,
    DataSource,
    crops_per_epoch,
    detect_layout,
    list_annotated,
    load_samples,
    random_crop,
    rbc_box_pixel_size,
    refine_with_teacher,
    split_folds,
)
from smearscan.weak_labels import ANY_WBC, IGNORE, NOT_WBC
from tests.annotated import PIXEL_SIZE_UM, write_mask_dataset, write_yolo_dataset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_parse_data_argument() -> None:
    assert DataSource.parse("a/b@0.15") == DataSource(Path("a/b"), 0.15)
    assert DataSource.parse("a/b") == DataSource(Path("a/b"), None)
    with pytest.raises(DatasetError, match="not a pixel size"):
        DataSource.parse("a/b@fast")
    with pytest.raises(DatasetError, match="must be in"):
        DataSource.parse("a/b@0")


def test_layouts_are_detected(tmp_path: Path) -> None:
    assert detect_layout(write_mask_dataset(tmp_path / "m", 1)) == "masks"
    assert detect_layout(write_yolo_dataset(tmp_path / "y", 1)) == "yolo"
    voc = tmp_path / "v"
    voc.mkdir()
    (voc / "a.xml").write_text("<annotation/>")
    assert detect_layout(voc) == "voc"
    xyc = tmp_path / "x"
    xyc.mkdir()
    (xyc / "Im001_1.xyc").write_text("10 20\n")
    assert detect_layout(xyc) == "xyc"
    with pytest.raises(DatasetError, match="no known layout"):
        detect_layout(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        detect_layout(tmp_path / "missing")


def test_missing_mask_names_the_image(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "m", 2)
    (data / "masks" / "001.png").unlink()
    with pytest.raises(DatasetError, match=r"001\.png"):
        list_annotated(data)


def test_masks_are_exact_and_background_is_not_wbc(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "m", 1)
    (sample,) = load_samples([DataSource(data, PIXEL_SIZE_UM)], PIXEL_SIZE_UM)
    mask = cv2.imread(str(data / "masks" / "000.png"), cv2.IMREAD_GRAYSCALE)
    assert sample.strong and sample.image.shape == (128, 128, 3)
    assert np.array_equal(sample.target == 3, mask == 255)
    assert np.array_equal(sample.target == 2, mask == 128)
    assert np.array_equal(sample.target == NOT_WBC, mask == 0)
    assert (sample.weight == 1).all()


def test_masks_are_brought_to_the_model_scale(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "m", 1)
    (sample,) = load_samples([DataSource(data, PIXEL_SIZE_UM)], 2 * PIXEL_SIZE_UM)
    assert sample.image.shape == (64, 64, 3) and sample.target.shape == (64, 64)
    mask = cv2.imread(str(data / "masks" / "000.png"), cv2.IMREAD_GRAYSCALE)
    assert (
        abs(int((sample.target == 3).sum()) * 4 - int((mask == 255).sum()))
        < 0.1 * (mask == 255).sum()
    )


def test_boxes_give_weak_labels_and_the_pixel_size(tmp_path: Path) -> None:
    data = write_yolo_dataset(tmp_path / "y", 3)
    samples = load_samples([DataSource(data)], PIXEL_SIZE_UM)
    for sample in samples:
        # RBC boxes 30 px across = 7.5 µm: the pixel size comes out as drawn
        assert sample.pixel_size_um == pytest.approx(PIXEL_SIZE_UM, rel=0.02)
        assert not sample.strong
        assert (sample.target == ANY_WBC).any() and (sample.target == 1).any()
        assert (sample.weight[sample.target == IGNORE] == 0).all()
        assert set(np.unique(sample.weight)) <= {0.0, np.float32(0.3)}


def test_rbc_box_pixel_size_needs_whole_boxes() -> None:
    whole = [Box(10 + 20 * i, 10, 30 + 20 * i, 30, "rbc") for i in range(3)]
    assert rbc_box_pixel_size(whole, 200, 200) == pytest.approx(7.5 / 20)
    at_edge = [Box(0, 10, 20, 30, "rbc")] * 3
    assert rbc_box_pixel_size(at_edge, 200, 200) is None


def test_random_crop_pads_small_samples_with_ignored_pixels(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "m", 1, size=64)
    (sample,) = load_samples([DataSource(data, PIXEL_SIZE_UM)], PIXEL_SIZE_UM)
    image, target, weight = random_crop(sample, 96, np.random.default_rng(0))
    assert image.shape == (96, 96, 3) and target.shape == weight.shape == (96, 96)
    assert (target[:16] == IGNORE).all() and (weight[:16] == 0).all()
    assert np.array_equal(target[16:80, 16:80], sample.target)
    assert crops_per_epoch(sample, 96) == 1


def test_folds_are_disjoint_stratified_and_complete(tmp_path: Path) -> None:
    a = load_samples([DataSource(write_mask_dataset(tmp_path / "a", 10), PIXEL_SIZE_UM)], 0.25)
    b = load_samples([DataSource(write_yolo_dataset(tmp_path / "b", 5), None)], 0.25)
    folds = list(split_folds(a + b, 5, seed=0))
    vals = [v for _, v in folds]
    names = sorted(s.name for v in vals for s in v)
    assert names == sorted(s.name for s in a + b)
    for train, val in folds:
        assert not {s.name for s in train} & {s.name for s in val}
        assert sum(s.source == a[0].source for s in val) == 2
        assert sum(s.source == b[0].source for s in val) == 1
    assert [s.name for s in folds[0][1]] == [s.name for s in next(split_folds(a + b, 5, 0))[1]]


@pytest.mark.skipif(not (DATA / "wbc-seg").is_dir(), reason="../shared/data/wbc-seg not present")
def test_wbc_seg_and_txl_pbc_load() -> None:
    samples = load_samples(
        [DataSource(DATA / "wbc-seg" / "jiangxi", 0.15), DataSource(DATA / "txl-pbc" / "val")],
        0.25,
        limit=5,
    )
    assert len(samples) == 10
    jiangxi, txl = samples[:5], samples[5:]
    assert all(s.strong and s.image.shape[0] == 72 for s in jiangxi)
    assert all(0.03 < s.pixel_size_um < 0.3 for s in txl)


def test_teacher_fills_only_the_open_labels() -> None:
    target = np.array([[NOT_WBC, NOT_WBC, NOT_WBC, ANY_WBC, ANY_WBC, 3, IGNORE]], np.uint8)
    weight = np.array([[1, 1, 1, 0.3, 0.3, 1, 0]], np.float32)
    teacher = np.array([[0, 1, 3, 3, 1, 2, 2]], np.uint8)
    new_target, new_weight = refine_with_teacher(target, weight, teacher, 0.3)
    # background / RBC fill "not a WBC"; nucleus fills "some WBC"; contradictions and
    # exact or ignored labels stay as annotated
    assert new_target.tolist() == [[0, 1, NOT_WBC, 3, ANY_WBC, 3, IGNORE]]
    assert new_weight[0].tolist() == pytest.approx([0.3, 0.3, 1, 0.3, 0.3, 1, 0])
    assert target[0, 0] == NOT_WBC  # inputs untouched


def test_classical_teacher_marks_the_drawn_background(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "m", 1)
    (plain,) = load_samples([DataSource(data, PIXEL_SIZE_UM)], PIXEL_SIZE_UM)
    (taught,) = load_samples(
        [DataSource(data, PIXEL_SIZE_UM)], PIXEL_SIZE_UM, teacher=load_model("classical")
    )
    background = plain.target == NOT_WBC
    assert (taught.target[background] == 0).mean() > 0.5  # the pale background
    assert np.array_equal(taught.target[~background], plain.target[~background])
