"""Annotation readers: label-mask PNGs, YOLO boxes, Pascal VOC XML and ALL-IDB ``.xyc`` points.

Every reader returns plain records in pixels of the image they annotate
(x = column, y = row), whatever the file's own convention:

* :func:`read_label_mask`: an 8-bit mask whose grey values map to classes
  (wbc-seg: 0 background, 128 cytoplasm, 255 nucleus), as a uint8 class map;
  stray grey values go to the nearest listed value.
* :func:`read_yolo_boxes`: ``class cx cy w h`` lines normalised to the image
  size (TXL-PBC).
* :func:`read_voc_boxes`: Pascal VOC ``object/name`` + ``bndbox``.
* :func:`read_xyc_points`: ALL-IDB centre points, one ``x y`` pair per line
  (tab or space separated); an empty file means none.

Problems (missing file, unreadable content, a box outside the image, a mask
whose size differs from its image) raise :class:`~smearscan.errors.InputError`
naming the file and the line.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from smearscan.errors import InputError

log = logging.getLogger(__name__)

#: wbc-seg mask grey value -> semantic class index (SEMANTIC_CLASSES): RBCs are not
#: marked in those masks, so 0 is "not a WBC" (background or RBC).
WBC_SEG_MAPPING: dict[int, int] = {0: 0, 128: 2, 255: 3}

#: TXL-PBC YOLO class index -> name.
TXL_PBC_CLASSES: tuple[str, ...] = ("wbc", "rbc", "platelet")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in image pixels (``x1``, ``y1`` exclusive edges, float)."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str

    @property
    def centre(self) -> tuple[float, float]:
        """``(x, y)`` centre in pixels."""
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


@dataclass(frozen=True)
class Point:
    """A cell centre in image pixels with its label."""

    x: float
    y: float
    label: str


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(path, "annotation file not found")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the annotation file: {exc}") from exc


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header only.

    Raises:
        InputError: Missing or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError(path, "image not found")
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(path, f"not a readable image: {exc}") from exc


def read_label_mask(
    mask_path: Path,
    mapping: Mapping[int, int] = WBC_SEG_MAPPING,
    *,
    expected_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a grey-level label mask as a class map.

    Args:
        mask_path: 8-bit (or RGB, converted to grey) mask image.
        mapping: Grey value -> class index; other values go to the nearest key.
        expected_shape: ``(H, W)`` of the image the mask belongs to.

    Returns:
        uint8 ``(H, W)`` class indices.

    Raises:
        InputError: Missing or unreadable mask, or a shape that differs from the image's.
    """
    if not mask_path.is_file():
        raise InputError(mask_path, "mask not found")
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise InputError(mask_path, "mask cannot be read as an image")
    if expected_shape is not None and mask.shape != tuple(expected_shape):
        raise InputError(
            mask_path,
            f"mask is {mask.shape[1]}x{mask.shape[0]} px, its image {expected_shape[1]}x"
            f"{expected_shape[0]} px",
        )
    stray = np.setdiff1d(np.unique(mask), list(mapping))
    if stray.size:
        log.debug("%s: grey values %s mapped to the nearest class value", mask_path, stray[:8])
    return map_grey_levels(mask, mapping)


def map_grey_levels(mask: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Map each grey value of a uint8 mask through ``mapping``, unlisted values via the nearest key.

    Args:
        mask: uint8 ``(H, W)``.
        mapping: Grey value -> output value (0-255).

    Returns:
        uint8 ``(H, W)``.
    """
    keys = np.array(sorted(mapping), dtype=np.int16)
    values = np.array([mapping[int(k)] for k in keys], dtype=np.uint8)
    lut = values[np.abs(np.arange(256, dtype=np.int16)[:, None] - keys[None, :]).argmin(axis=1)]
    return lut[mask]


def read_yolo_boxes(
    label_path: Path,
    width: int,
    height: int,
    class_names: Sequence[str] = TXL_PBC_CLASSES,
) -> list[Box]:
    """Read YOLO boxes (``class cx cy w h``, normalised) as pixel boxes.

    Args:
        label_path: The ``.txt`` file (empty: no boxes).
        width: Image width in pixels.
        height: Image height in pixels.
        class_names: Name of each class index.

    Raises:
        InputError: A malformed line, an unknown class index, or a box outside [0, 1].
    """
    boxes = []
    for number, line in enumerate(_read_text(label_path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            index = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:])
        except (ValueError, IndexError):
            raise InputError(
                label_path, f"line {number}: expected 'class cx cy w h', got {line!r}"
            ) from None
        if not 0 <= index < len(class_names):
            raise InputError(
                label_path, f"line {number}: class {index} not in 0..{len(class_names) - 1}"
            )
        tol = 1e-3
        if not (
            -tol <= cx - w / 2
            and cx + w / 2 <= 1 + tol
            and -tol <= cy - h / 2
            and cy + h / 2 <= 1 + tol
            and w > 0
            and h > 0
        ):
            raise InputError(label_path, f"line {number}: box outside the image: {line.strip()}")
        boxes.append(
            Box(
                x0=max(0.0, (cx - w / 2) * width),
                y0=max(0.0, (cy - h / 2) * height),
                x1=min(float(width), (cx + w / 2) * width),
                y1=min(float(height), (cy + h / 2) * height),
                label=class_names[index],
            )
        )
    return boxes


def read_voc_boxes(xml_path: Path) -> tuple[tuple[int, int] | None, list[Box]]:
    """Read a Pascal VOC annotation.

    Returns:
        ``((width, height) or None when the file has no size, boxes)``; VOC pixel
        coordinates are 1-based inclusive, so ``xmin`` becomes ``x0 = xmin - 1``.

    Raises:
        InputError: Not XML, or an object without a name or a complete ``bndbox``.
    """
    try:
        root = ET.fromstring(_read_text(xml_path))
    except ET.ParseError as exc:
        raise InputError(xml_path, f"not valid XML: {exc}") from exc
    size = None
    w, h = root.findtext("size/width"), root.findtext("size/height")
    if w and h:
        size = (int(float(w)), int(float(h)))
    boxes = []
    for number, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        coords = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
        if not name or any(c is None for c in coords):
            raise InputError(xml_path, f"object {number}: needs a name and xmin/ymin/xmax/ymax")
        try:
            x0, y0, x1, y1 = (float(c) for c in coords)  # type: ignore[arg-type]
        except ValueError:
            raise InputError(xml_path, f"object {number}: non-numeric bndbox {coords}") from None
        if x1 < x0 or y1 < y0:
            raise InputError(xml_path, f"object {number}: xmax/ymax below xmin/ymin")
        boxes.append(Box(x0 - 1, y0 - 1, x1, y1, name.lower()))
    return size, boxes


def read_xyc_points(xyc_path: Path, label: str = "blast") -> list[Point]:
    """Read ALL-IDB ``.xyc`` centre points (``x y`` per line; empty file: none).

    Raises:
        InputError: A line that is not two integers.
    """
    points = []
    for number, line in enumerate(_read_text(xyc_path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            x, y = (int(v) for v in parts)
        except ValueError:
            raise InputError(
                xyc_path, f"line {number}: expected 'x y' integers, got {line!r}"
            ) from None
        points.append(Point(float(x), float(y), label))
    return points
