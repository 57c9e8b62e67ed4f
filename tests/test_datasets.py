"""Annotation readers: real wbc-seg masks and TXL-PBC boxes, plus VOC and ALL-IDB files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from smearscan.datasets import (
    Box,
    image_size,
    read_label_mask,
    read_voc_boxes,
    read_xyc_points,
    read_yolo_boxes,
)
from smearscan.errors import InputError


def test_wbc_seg_mask_maps_grey_levels_to_classes(shared_data: Path):
    folder = shared_data / "wbc-seg" / "cellavision"
    name = sorted((folder / "masks").glob("*.png"))[0].name
    width, height = image_size(folder / "images" / name)
    classes = read_label_mask(folder / "masks" / name, expected_shape=(height, width))
    raw = cv2.imread(str(folder / "masks" / name), cv2.IMREAD_GRAYSCALE)
    assert classes.dtype == np.uint8 and set(np.unique(classes)) <= {0, 2, 3}
    assert ((classes == 3) == (raw > 191)).mean() > 0.999  # nucleus: 255 and near it
    assert (classes == 2).any() and (classes == 3).any()


def test_mask_stray_values_and_size_check(tmp_path: Path):
    mask = np.array([[0, 3, 120], [130, 250, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    np.testing.assert_array_equal(read_label_mask(tmp_path / "m.png"), [[0, 0, 2], [2, 3, 3]])
    with pytest.raises(InputError, match=r"m\.png.*its image 3x3"):
        read_label_mask(tmp_path / "m.png", expected_shape=(3, 3))
    with pytest.raises(InputError, match="not found"):
        read_label_mask(tmp_path / "missing.png")


def test_txl_pbc_yolo_boxes_in_pixels(shared_data: Path):
    images = shared_data / "txl-pbc" / "val" / "images"
    image = sorted(images.glob("*.jpg"))[0]
    width, height = image_size(image)
    boxes = read_yolo_boxes(images.parent / "labels" / f"{image.stem}.txt", width, height)
    assert boxes and {b.label for b in boxes} <= {"wbc", "rbc", "platelet"}
    for b in boxes:
        assert 0 <= b.x0 < b.x1 <= width and 0 <= b.y0 < b.y1 <= height


def test_yolo_errors_name_file_and_line(tmp_path: Path):
    label = tmp_path / "f.txt"
    label.write_text("0 0.5 0.5 0.2 0.2\n\n1 0.5 0.5 0.2\n")
    with pytest.raises(InputError, match=r"f.txt.*line 3"):
        read_yolo_boxes(label, 100, 100)
    label.write_text("7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(InputError, match="class 7"):
        read_yolo_boxes(label, 100, 100)
    label.write_text("0 0.95 0.5 0.2 0.2\n")
    with pytest.raises(InputError, match="outside"):
        read_yolo_boxes(label, 100, 100)
    label.write_text("0 0.5 0.25 0.2 0.1\n")
    assert read_yolo_boxes(label, 200, 100) == [Box(80.0, 20.0, 120.0, 30.0, "wbc")]


def test_voc_boxes(tmp_path: Path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><size><width>640</width><height>480</height></size>"
        "<object><name>WBC</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>50</xmax>"
        "<ymax>60</ymax></bndbox></object>"
        "<object><name>Platelets</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
        "<ymax>5</ymax></bndbox></object></annotation>"
    )
    size, boxes = read_voc_boxes(xml)
    assert size == (640, 480)
    assert boxes == [Box(10, 20, 50, 60, "wbc"), Box(0, 0, 5, 5, "platelets")]
    xml.write_text("<annotation><object><name>x</name></object></annotation>")
    with pytest.raises(InputError, match="object 1"):
        read_voc_boxes(xml)
    xml.write_text("<annotation><object>")
    with pytest.raises(InputError, match="not valid XML"):
        read_voc_boxes(xml)


def test_xyc_points(tmp_path: Path):
    xyc = tmp_path / "Im001_1.xyc"
    xyc.write_text("120\t340\n 55 66 \n\n")
    assert [(p.x, p.y, p.label) for p in read_xyc_points(xyc)] == [
        (120, 340, "blast"),
        (55, 66, "blast"),
    ]
    (tmp_path / "Im002_0.xyc").write_text("")
    assert read_xyc_points(tmp_path / "Im002_0.xyc") == []
    xyc.write_text("1.5 2\n")
    with pytest.raises(InputError, match="line 1"):
        read_xyc_points(xyc)
