"""Training samples for the segmentation models: annotated folders read at the model's scale.

``smearscan train --data PATH[@UM]`` names a folder in one of these layouts
(:func:`detect_layout`):

- ``masks``: ``images/NAME.*`` with ``masks/NAME.png`` grey-level label masks
  (wbc-seg: 0 background, 128 cytoplasm, 255 nucleus). The mask's background
  includes the RBCs, so it becomes the partial label :data:`NOT_WBC`
  ("background, RBC or platelet"); cytoplasm and nucleus are exact. Weight 1.
- ``yolo``: ``images/NAME.*`` with ``labels/NAME.txt`` YOLO boxes (class names
  from ``classes.txt`` when present, else TXL-PBC's ``wbc rbc platelet``).
- ``voc``: ``NAME.xml`` Pascal VOC files beside (or in ``annotations/`` next
  to ``images/``) their images.
- ``xyc``: ALL-IDB ``NAME.jpg`` + ``NAME.xyc`` blast centres.

Boxes and points become weak targets (:func:`smearscan.weak_labels.weak_mask`):
ellipses and discs with ignored corners and rings, weight ``weak_weight``.

With a teacher (``--teacher classical``, the default) the labels a dataset
leaves open are filled in by the classical colour segmenter, at the weak
weight: a :data:`NOT_WBC` pixel the teacher calls background, RBC or
platelet takes that class (the yellow background of a wbc-seg field is then
background, not "anything but a WBC"), and an ``ANY_WBC`` pixel of a box the
teacher calls cytoplasm or nucleus takes that class (:func:`refine_with_teacher`).
Where the teacher contradicts the annotation, the annotation's label stays.

Each image is brought to the model's scale once, when loaded: its pixel size is
``@UM`` when given, else the median RBC box (7.5 µm across) when the
annotation has at least three whole RBC boxes, else the RBC estimate of
:func:`smearscan.scale.estimate_pixel_size`. Training then draws random crops
(:func:`random_crop`) and augments them (:mod:`smearscan.augment`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from smearscan.datasets import (
    TXL_PBC_CLASSES,
    Box,
    Point,
    read_label_mask,
    read_voc_boxes,
    read_xyc_points,
    read_yolo_boxes,
)
from smearscan.errors import InputError, ScaleEstimationError, SmearscanError
from smearscan.resample import nearest_indices, resample_image, scale_factor
from smearscan.scale import estimate_pixel_size
from smearscan.weak_labels import ANY_WBC, IGNORE, NOT_WBC, weak_mask

log = logging.getLogger(__name__)

#: Image file suffixes looked for in a dataset folder.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Layout names of :func:`detect_layout`.
LAYOUTS: tuple[str, ...] = ("masks", "yolo", "voc", "xyc")
#: Grey level of a training mask -> target (background is "not a WBC", see module doc).
TRAIN_MASK_MAPPING: dict[int, int] = {0: NOT_WBC, 128: 2, 255: 3}
#: Assumed RBC diameter (µm) when the pixel size comes from RBC boxes.
RBC_DIAMETER_UM = 7.5
#: Fewest whole RBC boxes for a pixel size from the boxes.
MIN_RBC_BOXES = 3


class DatasetError(SmearscanError):
    """A dataset folder that cannot be used for training or evaluation."""


@dataclass(frozen=True)
class DataSource:
    """One ``--data`` argument.

    Attributes:
        path: The dataset folder.
        pixel_size_um: Pixel size of all its images (µm/px), or None to derive it per image.
    """

    path: Path
    pixel_size_um: float | None = None

    @property
    def name(self) -> str:
        """Short name: the folder's last two parts (``wbc-seg/jiangxi``)."""
        return "/".join(self.path.resolve().parts[-2:])

    @classmethod
    def parse(cls, text: str) -> DataSource:
        """Parse ``PATH`` or ``PATH@UM`` (e.g. ``data/wbc-seg/jiangxi@0.15``).

        Raises:
            DatasetError: A pixel size that is not a positive number.
        """
        path, sep, um = text.rpartition("@")
        if not sep:
            return cls(Path(text))
        try:
            value = float(um)
        except ValueError:
            raise DatasetError(f"--data {text!r}: {um!r} is not a pixel size in µm/px") from None
        if not 0 < value < 100:
            raise DatasetError(f"--data {text!r}: pixel size must be in (0, 100) µm/px")
        return cls(Path(path), value)


@dataclass(frozen=True)
class Annotated:
    """One image of a dataset with its annotation, before loading pixels.

    Attributes:
        image: The image file.
        layout: One of :data:`LAYOUTS`.
        annotation: Mask, label or point file (None: an image with no boxes).
    """

    image: Path
    layout: str
    annotation: Path | None


@dataclass(frozen=True)
class Sample:
    """A training sample at the model's scale.

    Attributes:
        name: ``source/image file name``, unique within a run.
        source: :attr:`DataSource.name` of its dataset.
        image: uint8 ``(H, W, 3)`` RGB.
        target: uint8 ``(H, W)``: class indices, partial labels or :data:`IGNORE`.
        weight: float32 ``(H, W)`` loss weights, 0 where ignored.
        strong: Whether the target is an exact mask (Dice is meaningful on it).
        pixel_size_um: Pixel size of the source image (µm/px).
    """

    name: str
    source: str
    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    strong: bool
    pixel_size_um: float


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def detect_layout(folder: Path) -> str:
    """Which of :data:`LAYOUTS` a dataset folder uses.

    Raises:
        DatasetError: Not a folder, or none of the layouts.
    """
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found")
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return "masks"
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        return "yolo"
    if any(folder.glob("*.xml")) or (folder / "annotations").is_dir():
        return "voc"
    if any(folder.glob("*.xyc")):
        return "xyc"
    raise DatasetError(
        f"{folder}: no known layout; expected images/ + masks/ (label masks), images/ + "
        "labels/ (YOLO), *.xml or annotations/ (Pascal VOC) or *.xyc (ALL-IDB)"
    )


def list_annotated(folder: Path) -> list[Annotated]:
    """Every image of a dataset folder with its annotation file, sorted by name.

    Raises:
        DatasetError: Unknown layout, or no image.
    """
    layout = detect_layout(folder)
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    items = []
    for image in _images(image_dir):
        if layout == "masks":
            ann = folder / "masks" / f"{image.stem}.png"
        elif layout == "yolo":
            ann = folder / "labels" / f"{image.stem}.txt"
        elif layout == "voc":
            beside = image.with_suffix(".xml")
            ann = beside if beside.exists() else folder / "annotations" / f"{image.stem}.xml"
        else:
            ann = image.with_suffix(".xyc")
        items.append(Annotated(image, layout, ann if ann.exists() else None))
    if not items:
        raise DatasetError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    missing = [item.image.name for item in items if item.annotation is None]
    if layout == "masks" and missing:
        raise DatasetError(f"{folder}: no mask for {len(missing)} image(s), e.g. {missing[0]}")
    return items


def yolo_class_names(folder: Path) -> tuple[str, ...]:
    """Class names of a YOLO folder: ``classes.txt`` (one per line) or TXL-PBC's."""
    names_file = folder / "classes.txt"
    if names_file.is_file():
        names = tuple(line.strip() for line in names_file.read_text().splitlines())
        return tuple(n for n in names if n)
    return TXL_PBC_CLASSES


def read_rgb(path: Path) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB pixels of an image file.

    Raises:
        InputError: Unreadable file.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(path, "cannot be read as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_shapes(item: Annotated, width: int, height: int) -> tuple[list[Box], list[Point]]:
    """The boxes and points of a weakly annotated image (empty for a missing file)."""
    if item.annotation is None:
        return [], []
    if item.layout == "yolo":
        names = yolo_class_names(item.image.parent.parent)
        return read_yolo_boxes(item.annotation, width, height, names), []
    if item.layout == "voc":
        return read_voc_boxes(item.annotation)[1], []
    return [], read_xyc_points(item.annotation)


def rbc_box_pixel_size(boxes: Sequence[Box], width: int, height: int) -> float | None:
    """Pixel size (µm/px) from the median diameter of whole RBC boxes, or None (too few)."""
    diameters = [
        (b.x1 - b.x0 + b.y1 - b.y0) / 2
        for b in boxes
        if b.label.lower() == "rbc" and b.x0 > 0 and b.y0 > 0 and b.x1 < width and b.y1 < height
    ]
    if len(diameters) < MIN_RBC_BOXES:
        return None
    return RBC_DIAMETER_UM / float(np.median(diameters))


def _to_scale(array: np.ndarray, s: float) -> np.ndarray:
    """Nearest-neighbour resampling of a ``(H, W)`` map by ``s`` (labels, weights)."""
    h, w = round(array.shape[0] * s), round(array.shape[1] * s)
    rows = nearest_indices(max(1, h), s, 1.0, array.shape[0])
    cols = nearest_indices(max(1, w), s, 1.0, array.shape[1])
    return np.ascontiguousarray(array[rows[:, None], cols[None, :]])


#: Teacher class -> allowed for a pixel with this partial label (see module doc).
_TEACHER_FILLS: dict[int, tuple[int, ...]] = {NOT_WBC: (0, 1, 4), ANY_WBC: (2, 3)}


def refine_with_teacher(
    target: np.ndarray, weight: np.ndarray, teacher: np.ndarray, weak_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fill partial labels with a teacher's classes where the two agree.

    Args:
        target: uint8 ``(H, W)`` training target (classes, partial labels, IGNORE).
        weight: float32 ``(H, W)`` loss weights.
        teacher: uint8 ``(H, W)`` class map of the teacher (0..4), same grid.
        weak_weight: Weight of a filled-in pixel.

    Returns:
        New ``(target, weight)``: a :data:`NOT_WBC` pixel the teacher calls 0, 1 or 4
        and an ``ANY_WBC`` pixel it calls 2 or 3 take the teacher's class at
        ``weak_weight``; every other pixel is unchanged.
    """
    target, weight = target.copy(), weight.copy()
    for partial, allowed in _TEACHER_FILLS.items():
        fill = (target == partial) & np.isin(teacher, allowed)
        target[fill] = teacher[fill]
        weight[fill] = weak_weight
    return target, weight


def load_sample(
    item: Annotated,
    source: DataSource,
    model_pixel_size_um: float,
    *,
    weak_weight: float = 0.3,
    teacher: torch.nn.Module | None = None,
) -> Sample:
    """Read one annotated image and bring it to the model's scale.

    ``teacher`` (a segmenter, e.g. the classical one) fills in partial labels
    (:func:`refine_with_teacher`).

    Raises:
        InputError: Unreadable image or annotation, or a mask of another size.
        ScaleEstimationError: No pixel size given and none could be derived.
    """
    rgb = read_rgb(item.image)
    height, width = rgb.shape[:2]
    if item.layout == "masks":
        if item.annotation is None:
            raise InputError(item.image, "no label mask beside the image")
        target = read_label_mask(
            item.annotation, TRAIN_MASK_MAPPING, expected_shape=(height, width)
        )
        weight = np.ones(target.shape, np.float32)
        pixel_size = source.pixel_size_um
    else:
        boxes, points = read_shapes(item, width, height)
        pixel_size = source.pixel_size_um or rbc_box_pixel_size(boxes, width, height)
        if pixel_size is None:
            try:
                pixel_size = estimate_pixel_size(rgb).pixel_size_um
            except ScaleEstimationError as exc:
                raise ScaleEstimationError(f"{item.image}: {exc}") from None
        try:
            weak = weak_mask(
                (height, width),
                boxes=boxes,
                points=points,
                pixel_size_um=pixel_size,
                weak_weight=weak_weight,
            )
        except ValueError as exc:
            raise InputError(item.annotation or item.image, str(exc)) from None
        target, weight = weak.target, weak.weight
    if pixel_size is None:
        pixel_size = estimate_pixel_size(rgb).pixel_size_um
    s = scale_factor(pixel_size, model_pixel_size_um)
    image, target, weight = resample_image(rgb, s), _to_scale(target, s), _to_scale(weight, s)
    if teacher is not None:
        from smearscan.evaluation import segment_at_source

        taught = segment_at_source(teacher, image, model_pixel_size_um)
        target, weight = refine_with_teacher(target, weight, taught, weak_weight)
    return Sample(
        name=f"{source.name}/{item.image.name}",
        source=source.name,
        image=image,
        target=target,
        weight=weight,
        strong=item.layout == "masks",
        pixel_size_um=float(pixel_size),
    )


def load_samples(
    sources: Sequence[DataSource],
    model_pixel_size_um: float,
    *,
    weak_weight: float = 0.3,
    limit: int | None = None,
    teacher: torch.nn.Module | None = None,
) -> list[Sample]:
    """Every usable image of the datasets, at the model's scale.

    An image that cannot be read or scaled is logged and left out (named in the
    warning); a dataset that yields no sample raises.

    Args:
        sources: Parsed ``--data`` arguments.
        model_pixel_size_um: The model's input scale, µm/px.
        weak_weight: Loss weight of box and point labels.
        limit: Read at most this many images per dataset (first by name).
        teacher: Segmenter filling in partial labels (:func:`refine_with_teacher`).

    Raises:
        DatasetError: A dataset with no layout, no image or no usable sample.
    """
    samples: list[Sample] = []
    for source in sources:
        loaded = 0
        for item in list_annotated(source.path)[:limit]:
            try:
                samples.append(
                    load_sample(
                        item, source, model_pixel_size_um, weak_weight=weak_weight, teacher=teacher
                    )
                )
                loaded += 1
            except SmearscanError as exc:
                log.warning("left out of training: %s", exc)
        if loaded == 0:
            raise DatasetError(f"{source.path}: no usable training image")
        log.info("%s: %d images (%s)", source.name, loaded, detect_layout(source.path))
    return samples


def random_crop(
    sample: Sample, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random ``size x size`` window of a sample; smaller samples are padded.

    Padding mirrors the image and marks the target :data:`IGNORE` with weight 0.

    Returns:
        ``(image uint8 (size, size, 3), target uint8 (size, size), weight float32 (size, size))``.
    """
    h, w = sample.target.shape
    y0 = int(rng.integers(0, h - size + 1)) if h > size else 0
    x0 = int(rng.integers(0, w - size + 1)) if w > size else 0
    image = sample.image[y0 : y0 + size, x0 : x0 + size]
    target = sample.target[y0 : y0 + size, x0 : x0 + size]
    weight = sample.weight[y0 : y0 + size, x0 : x0 + size]
    ph, pw = size - image.shape[0], size - image.shape[1]
    if ph or pw:
        top, left = ph // 2, pw // 2
        pad = ((top, ph - top), (left, pw - left))
        image = np.pad(image, (*pad, (0, 0)), mode="symmetric")
        target = np.pad(target, pad, constant_values=IGNORE)
        weight = np.pad(weight, pad, constant_values=0.0)
    return image, target, weight


def crops_per_epoch(sample: Sample, size: int, max_crops: int = 4) -> int:
    """How many crops a sample gives per epoch: its area in crops, 1 to ``max_crops``."""
    h, w = sample.target.shape
    return int(min(max_crops, max(1, round(h * w / (size * size)))))


def kfold_indices(n: int, k: int, seed: int) -> list[np.ndarray]:
    """Split ``range(n)`` into ``k`` shuffled folds of near-equal size (deterministic).

    Raises:
        ValueError: ``k < 2`` or more folds than items.
    """
    if k < 2 or k > n:
        raise ValueError(f"need 2 <= folds <= {n} samples, got {k}")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def split_folds(
    samples: Sequence[Sample], k: int, seed: int
) -> Iterator[tuple[list[Sample], list[Sample]]]:
    """``(train, validation)`` pairs of k-fold cross-validation, stratified by dataset.

    Each dataset is split into ``k`` folds on its own, so every fold holds the same
    share of every dataset.
    """
    by_source: dict[str, list[Sample]] = {}
    for sample in samples:
        by_source.setdefault(sample.source, []).append(sample)
    folds: list[list[Sample]] = [[] for _ in range(k)]
    for items in by_source.values():
        for fold, index in zip(folds, kfold_indices(len(items), k, seed), strict=True):
            fold.extend(items[i] for i in index)
    for i in range(k):
        train = [s for j, fold in enumerate(folds) if j != i for s in fold]
        yield train, folds[i]
