"""Labelled cells for ``smearscan train --task classify``: crops + morphometry + label.

``--data PATH[@UM]`` names a folder in one of these layouts (:func:`list_labelled`):

- ``classes``: one sub-folder per class holding single-cell crops, the cell
  in the middle (the layout of ``pbc-cells``: ``neutrophil/*.jpg``...).
- ``csv``: ``cells.csv`` with ``image,x,y,cell_type`` (pixels, x = column) or
  ``labels.csv`` with ``image,cell_type`` (one cell per image, the one nearest
  the image centre: wbc-seg); images are found beside the CSV or in ``images/``.
- ``yolo`` / ``voc``: boxes with class names (``classes.txt`` for YOLO); the
  untyped classes ``wbc`` and ``rbc`` are skipped.
- ``xyc``: ALL-IDB ``NAME.jpg`` + ``NAME.xyc``: every point is a ``blast``.

Each image goes through the product itself (:func:`smearscan.pipeline.process_batch`
with the chosen segmentation model), so a labelled point takes the centroid and
morphometry of the cell ``process`` finds there (the nearest within
:data:`MATCH_RADIUS_UM`); a point with no cell found keeps its own position
and missing morphometry. The crop is then cut around that centroid
(:func:`smearscan.cell_crops.cut_crops`), exactly as ``process`` will.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from smearscan.cell_crops import CROP_PIXEL_SIZE_UM, CROP_PX, MEASURED, cut_crops
from smearscan.config import ProcessConfig
from smearscan.datasets import Point, image_size
from smearscan.resample import array_reader
from smearscan.train_data import (
    IMAGE_SUFFIXES,
    DatasetError,
    DataSource,
    detect_layout,
    list_annotated,
    read_rgb,
    read_shapes,
)

log = logging.getLogger(__name__)

#: A labelled point takes the cell found within this distance (µm) of it.
MATCH_RADIUS_UM = 8.0
#: Labels that name no cell type (skipped in box files).
UNTYPED = frozenset({"wbc", "rbc", "cell"})


@dataclass(frozen=True)
class LabelledImage:
    """One image with its labelled cells.

    Attributes:
        path: The image file.
        points: Labelled cell positions in image pixels; for ``centred`` images
            one point at the image centre.
        centred: The image holds one labelled cell, the one nearest its centre.
    """

    path: Path
    points: tuple[Point, ...]
    centred: bool = False


@dataclass
class CellSet:
    """Labelled cells ready for training.

    Attributes:
        crops: uint8 ``(N, S, S, 3)`` crops at ``crop_pixel_size_um``.
        features: float64 ``(N, len(MEASURED))`` raw morphometry (NaN: missing),
            columns in :data:`~smearscan.cell_crops.MEASURED` order (:meth:`frame`).
        labels: ``(N,)`` str class labels (lower case).
        images: ``(N,)`` str: ``source/file name`` of each cell's image.
        matched: bool ``(N,)``: the label was matched to a cell ``process`` found.
        crop_pixel_size_um: Scale of the crops.
    """

    crops: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    images: np.ndarray
    matched: np.ndarray
    crop_pixel_size_um: float

    def __len__(self) -> int:
        return len(self.labels)

    def frame(self) -> pd.DataFrame:
        """The morphometry as a DataFrame, one column per :data:`MEASURED` name."""
        return pd.DataFrame(self.features, columns=list(MEASURED))

    def subset(self, index: np.ndarray) -> CellSet:
        """The cells at ``index`` (an int or bool array)."""
        return CellSet(
            self.crops[index],
            self.features[index],
            self.labels[index],
            self.images[index],
            self.matched[index],
            self.crop_pixel_size_um,
        )

    def save(self, path: Path) -> None:
        """Write to a compressed ``.npz``."""
        np.savez_compressed(
            path,
            crops=self.crops,
            features=self.features,
            labels=self.labels.astype(str),
            images=self.images.astype(str),
            matched=self.matched,
            crop_pixel_size_um=np.float64(self.crop_pixel_size_um),
        )

    @classmethod
    def load(cls, path: Path) -> CellSet:
        """Read what :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as z:
            return cls(
                z["crops"],
                z["features"],
                z["labels"],
                z["images"],
                z["matched"],
                float(z["crop_pixel_size_um"]),
            )

    @classmethod
    def concat(cls, sets: Sequence[CellSet]) -> CellSet:
        """All cells of ``sets`` (same crop scale) in order."""
        return cls(
            np.concatenate([s.crops for s in sets]),
            np.concatenate([s.features for s in sets]),
            np.concatenate([s.labels for s in sets]),
            np.concatenate([s.images for s in sets]),
            np.concatenate([s.matched for s in sets]),
            sets[0].crop_pixel_size_um,
        )


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and _images(d))


def classify_layout(folder: Path) -> str:
    """``classes``, ``csv`` or a segmentation layout of :func:`detect_layout`.

    Raises:
        DatasetError: Not a folder, or no known layout.
    """
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found")
    if (folder / "cells.csv").is_file() or (folder / "labels.csv").is_file():
        return "csv"
    if not (folder / "images").is_dir() and len(_class_folders(folder)) >= 2:
        return "classes"
    return detect_layout(folder)


def _centre_point(path: Path, label: str) -> Point:
    """A point at the centre of the image (its size read from the header only)."""
    width, height = image_size(path)
    return Point(width / 2 - 0.5, height / 2 - 0.5, label)


def _from_csv(folder: Path) -> list[LabelledImage]:
    table = folder / "cells.csv" if (folder / "cells.csv").is_file() else folder / "labels.csv"
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    by_image: dict[str, list[Point]] = {}
    centred: set[str] = set()
    with table.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        if not {"image", "cell_type"} <= columns:
            raise DatasetError(f"{table}: needs columns image,cell_type (and x,y per cell)")
        with_xy = {"x", "y"} <= columns
        for number, row in enumerate(reader, start=2):
            name, label = (row.get("image") or "").strip(), (row.get("cell_type") or "").strip()
            if not name or not label:
                continue  # unlabelled image
            if not with_xy:
                centred.add(name)
                by_image.setdefault(name, []).append(Point(np.nan, np.nan, label.lower()))
                continue
            try:
                point = Point(float(row["x"]), float(row["y"]), label.lower())
            except (TypeError, ValueError):
                raise DatasetError(f"{table}: line {number}: x and y must be numbers") from None
            by_image.setdefault(name, []).append(point)
    items = []
    for name, points in sorted(by_image.items()):
        path = image_dir / name
        if not path.is_file():
            matches = sorted(image_dir.glob(f"{Path(name).stem}.*"))
            if not matches:
                raise DatasetError(f"{table}: image {name!r} not found in {image_dir}")
            path = matches[0]
        if name in centred:
            items.append(LabelledImage(path, (_centre_point(path, points[0].label),), True))
        else:
            items.append(LabelledImage(path, tuple(points)))
    return items


def list_labelled(folder: Path) -> list[LabelledImage]:
    """Every image of a classification dataset with its labelled cells.

    Raises:
        DatasetError: Unknown layout, no labelled cell, or a malformed table.
        InputError: An unreadable image or annotation (naming the file).
    """
    layout = classify_layout(folder)
    if layout == "classes":
        items = [
            LabelledImage(image, (_centre_point(image, d.name.lower()),), True)
            for d in _class_folders(folder)
            for image in _images(d)
        ]
    elif layout == "csv":
        items = _from_csv(folder)
    elif layout == "masks":
        raise DatasetError(
            f"{folder}: label masks carry no cell types; add labels.csv (image,cell_type)"
        )
    else:
        items = []
        for item in list_annotated(folder):
            width, height = image_size(item.image)
            boxes, points = read_shapes(item, width, height)
            cells = [Point(*b.centre, b.label.lower()) for b in boxes] + list(points)
            typed = tuple(p for p in cells if p.label not in UNTYPED)
            if typed:
                items.append(LabelledImage(item.image, typed))
    if not items:
        raise DatasetError(f"{folder}: no labelled cells ({layout} layout)")
    return items


def _cache_key(sources: Sequence[DataSource], config: ProcessConfig, crop: tuple) -> str:
    from smearscan.registry import model_sha256

    text = json.dumps(
        {
            "sources": [[str(s.path.resolve()), s.pixel_size_um] for s in sources],
            "model": model_sha256(config.model),
            "cells": dataclasses.asdict(config.cells),
            "crop": list(crop),
            "columns": list(MEASURED),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _harvest_source(
    source: DataSource,
    config: ProcessConfig,
    work: Path,
    crop_px: int,
    crop_pixel_size_um: float,
    limit: int | None,
) -> CellSet:
    from smearscan.batch import process_batch

    items = list_labelled(source.path)
    if limit is not None:
        items = items[:limit]
    run_config = config.with_overrides(
        scale={"pixel_size_um": source.pixel_size_um},
        classify={"classifier": "rules"},
        output={"write_previews": False, "write_probabilities": False, "write_image": False},
    )
    batch = process_batch([i.path for i in items], work / "harvest.xlsx", run_config)
    by_path = {Path(r.path): r for r in batch.results}
    crops, feats, labels, images, matched = [], [], [], [], []
    for item in items:
        result = by_path.get(item.path.resolve())
        if result is None or result.status != "ok" or not result.pixel_size_um:
            why = result.error if result is not None else "not processed"
            log.warning("%s: skipped (%s)", item.path, why)
            continue
        radius = MATCH_RADIUS_UM / result.pixel_size_um
        found = np.array([[c["centroid_x"], c["centroid_y"]] for c in result.cells]).reshape(-1, 2)
        centres = []
        for point in item.points:
            row = None
            if len(found):
                d = np.hypot(found[:, 0] - point.x, found[:, 1] - point.y)
                if d.min() <= radius:
                    row = result.cells[int(d.argmin())]
            centres.append((row["centroid_x"], row["centroid_y"]) if row else (point.x, point.y))
            feats.append([float(row.get(f, np.nan)) if row else np.nan for f in MEASURED])
            labels.append(point.label)
            images.append(f"{source.name}/{item.path.name}")
            matched.append(row is not None)
        reader = array_reader(read_rgb(item.path))
        crops.append(
            cut_crops(reader, np.array(centres), result.pixel_size_um, crop_px, crop_pixel_size_um)
        )
    if not labels:
        raise DatasetError(f"{source.path}: no labelled cell could be used")
    return CellSet(
        np.concatenate(crops),
        np.array(feats, dtype=np.float64).reshape(-1, len(MEASURED)),
        np.array(labels),
        np.array(images),
        np.array(matched, dtype=bool),
        crop_pixel_size_um,
    )


def harvest(
    sources: Sequence[DataSource],
    config: ProcessConfig,
    *,
    crop_px: int = CROP_PX,
    crop_pixel_size_um: float = CROP_PIXEL_SIZE_UM,
    cache_dir: Path | None = None,
    limit: int | None = None,
) -> CellSet:
    """Labelled cells of every source, found and measured by ``process``.

    Args:
        sources: ``--data`` folders (with their pixel sizes when known).
        config: Run configuration: its segmentation model, cell and device settings.
        crop_px: Crop side in pixels.
        crop_pixel_size_um: Crop scale.
        cache_dir: Keep the result as ``cells-KEY.npz`` here (KEY from the sources,
            the segmentation model's sha256 and the settings) and reuse it.
        limit: At most this many images per source.

    Raises:
        DatasetError: A source with no usable labelled cell.
    """
    key = _cache_key(sources, config, (crop_px, crop_pixel_size_um, limit))
    cache = cache_dir / f"cells-{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        log.info("labelled cells from %s", cache)
        return CellSet.load(cache)
    sets = []
    for source in sources:
        with tempfile.TemporaryDirectory(prefix="smearscan-harvest-") as tmp:
            cell_set = _harvest_source(
                source, config, Path(tmp), crop_px, crop_pixel_size_um, limit
            )
        log.info(
            "%s: %d labelled cells, %d matched to a cell found by %s",
            source.name,
            len(cell_set),
            int(cell_set.matched.sum()),
            config.model,
        )
        sets.append(cell_set)
    cells = CellSet.concat(sets)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cells.save(cache)
    return cells
