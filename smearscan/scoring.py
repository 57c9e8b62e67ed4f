"""``smearscan evaluate``: score a model, or a previous run, against annotated images.

A run's outputs (the Summary, the Cells rows and the Zarr masks) are compared
with a dataset of :mod:`smearscan.train_data`'s layouts, image by image:

- label masks (``masks`` layout): Dice and IoU of ``labels/nuclei`` against the
  nucleus and of ``labels/cells`` against the whole cell (cytoplasm or
  nucleus), the labels brought back to the source grid; and the same Dice for
  the annotated cell alone (``annotated_*_dice``: only the predicted cells that
  overlap the expert's cell, with their nuclei), since single-cell sets such as
  wbc-seg outline one white cell per image and leave its neighbours cut by the
  image border unlabelled;
- boxes (``yolo``, ``voc``): WBC detection, a predicted WBC matching a true
  WBC box when its centroid lies inside it (one-to-one, nearest box centre
  first); WBC, RBC and platelet counts against the number of boxes;
- points (``xyc``): a predicted WBC matches a point within
  :data:`POINT_MATCH_UM` of its centroid.

:func:`evaluate` either runs ``process`` with a model over the datasets first
or reads the report of an earlier run (:func:`read_run`); :func:`write_scores`
writes the per-image rows and the overall rows to xlsx or CSV.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smearscan.config import ProcessConfig, ScaleConfig
from smearscan.datasets import Box, Point, image_size
from smearscan.errors import InputError
from smearscan.metrics import dice_score, iou_score
from smearscan.resample import labels_to_source
from smearscan.results import OutputPaths
from smearscan.train_data import (
    Annotated,
    DatasetError,
    DataSource,
    list_annotated,
    read_shapes,
)

log = logging.getLogger(__name__)

#: Largest distance (µm) from a point annotation to a predicted WBC centroid for a match.
POINT_MATCH_UM = 6.0
#: Per-image metrics of a label-mask image (all 0 when its slide failed).
MASK_METRICS = (
    "nucleus_dice",
    "nucleus_iou",
    "cell_dice",
    "cell_iou",
    "annotated_nucleus_dice",
    "annotated_cell_dice",
)
#: Box / point labels that count as white cells.
WBC_LABELS = frozenset({"wbc", "blast", "neutrophil", "lymphocyte", "monocyte", "eosinophil"})


@dataclass(frozen=True)
class RunSlide:
    """What a ``process`` run produced for one image.

    Attributes:
        slide: The Summary's ``slide`` value.
        path: Absolute path of the image the run read ("" when unknown).
        status: ``ok`` or ``failed``.
        mask_path: Its Zarr group (absolute), or None.
        centroids: float ``(n, 2)`` WBC centroids ``(x, y)`` in source pixels.
        rbc_count: RBCs found.
        platelet_count: Platelets found.
        pixel_size_um: The pixel size used (µm/px).
    """

    slide: str
    path: str
    status: str
    mask_path: Path | None
    centroids: np.ndarray
    rbc_count: int
    platelet_count: int
    pixel_size_um: float


def _int(value: Any) -> int:
    return 0 if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def run_slides_from_results(results: Sequence[Any]) -> list[RunSlide]:
    """:class:`RunSlide` records of :class:`~smearscan.results.SlideResult` objects."""
    slides = []
    for r in results:
        xy = [[c["centroid_x"], c["centroid_y"]] for c in r.cells]
        slides.append(
            RunSlide(
                slide=r.slide,
                path=r.path,
                status=r.status,
                mask_path=Path(r.mask_path) if r.mask_path else None,
                centroids=np.asarray(xy, dtype=np.float64).reshape(-1, 2),
                rbc_count=_int(r.rbc_count),
                platelet_count=_int(r.platelet_count),
                pixel_size_um=float(r.pixel_size_um or math.nan),
            )
        )
    return slides


def read_run(report: Path) -> list[RunSlide]:
    """The slides of an earlier run, from ``OUT.xlsx`` and ``OUT_cells.parquet`` beside it.

    Raises:
        InputError: The report is missing or has no Summary sheet.
        DatasetError: Two slides of the report share a name.
    """
    if not report.is_file():
        raise InputError(report, "report not found")
    try:
        summary = pd.read_excel(report, sheet_name="Summary")
    except (ValueError, OSError) as exc:
        raise InputError(report, f"cannot read its Summary sheet: {exc}") from exc
    parquet = OutputPaths.for_report(report).cells
    cells = (
        pd.read_parquet(parquet) if parquet.is_file() else pd.read_excel(report, sheet_name="Cells")
    )
    records = summary.to_dict("records")
    names = [str(row["slide"]) for row in records]
    slides = []
    for row, name in zip(records, names, strict=True):
        if names.count(name) > 1:
            raise DatasetError(
                f"{report}: {names.count(name)} slides are named {name!r}, so their Cells rows "
                "cannot be told apart; process each dataset into its own report, or give "
                "their common parent folder as the input"
            )
        mine = cells[cells["slide"] == name]
        mask, path = row.get("mask_path"), row.get("source_path")
        slides.append(
            RunSlide(
                slide=name,
                path=path if isinstance(path, str) else "",
                status=str(row["status"]),
                mask_path=(report.parent / str(mask)).resolve() if isinstance(mask, str) else None,
                centroids=mine[["centroid_x", "centroid_y"]].to_numpy(np.float64).reshape(-1, 2),
                rbc_count=_int(row.get("rbc_count")),
                platelet_count=_int(row.get("platelet_count")),
                pixel_size_um=float(row.get("pixel_size_um") or math.nan),
            )
        )
    return slides


def match_slide(image: Path, slides: Sequence[RunSlide]) -> RunSlide | None:
    """The run's slide of an image: the one read from that very file, else the one whose
    ``slide`` path ends with the most of the image's path parts (None: no part in common)."""
    resolved = str(image.resolve())
    for slide in slides:
        if slide.path and str(Path(slide.path).resolve()) == resolved:
            return slide
    best, best_depth = None, 0
    for slide in slides:
        depth = 0
        for a, b in zip(reversed(Path(slide.slide).parts), reversed(image.parts), strict=False):
            if a != b:
                break
            depth += 1
        if depth > best_depth:
            best, best_depth = slide, depth
    return best


def match_points_in_boxes(points: np.ndarray, boxes: Sequence[Box]) -> int:
    """One-to-one matches of points ``(n, 2)`` (x, y) to boxes containing them.

    Pairs are taken greedily, nearest box centre first.
    """
    if len(points) == 0 or not boxes:
        return 0
    b = np.array([[x.x0, x.y0, x.x1, x.y1] for x in boxes])
    px, py = points[:, None, 0], points[:, None, 1]
    inside = (
        (px >= b[None, :, 0])
        & (px <= b[None, :, 2])
        & (py >= b[None, :, 1])
        & (py <= b[None, :, 3])
    )
    centres = (b[:, :2] + b[:, 2:]) / 2
    dist = np.linalg.norm(points[:, None, :] - centres[None], axis=2)
    return _greedy(inside, dist)


def match_points_to_points(pred: np.ndarray, truth: Sequence[Point], radius_px: float) -> int:
    """One-to-one matches of predicted centroids to true points within ``radius_px``."""
    if len(pred) == 0 or not truth:
        return 0
    t = np.array([[p.x, p.y] for p in truth])
    dist = np.linalg.norm(pred[:, None, :] - t[None], axis=2)
    return _greedy(dist <= radius_px, dist)


def _greedy(allowed: np.ndarray, dist: np.ndarray) -> int:
    used_a: set[int] = set()
    used_b: set[int] = set()
    for a, b in sorted(zip(*np.nonzero(allowed), strict=True), key=lambda ab: dist[ab]):
        if a not in used_a and b not in used_b:
            used_a.add(int(a))
            used_b.add(int(b))
    return len(used_a)


def _labels(slide: RunSlide, name: str, height: int, width: int) -> np.ndarray:
    import zarr

    from smearscan.ngff import full_resolution

    if slide.mask_path is None:
        raise InputError(Path(slide.slide), "the run wrote no masks for this slide")
    group = zarr.open_group(str(slide.mask_path), mode="r")
    try:
        array = full_resolution(group, f"labels/{name}")
    except KeyError:
        raise InputError(slide.mask_path, f"no labels/{name} in the slide's Zarr group") from None
    labels = np.asarray(array[...])
    return labels_to_source(labels, labels.shape[0] / height, height, width)


def _mask_scores(item: Annotated, slide: RunSlide) -> dict[str, Any]:
    import cv2

    if item.annotation is None:
        raise InputError(item.image, "no label mask beside the image")
    truth = cv2.imread(str(item.annotation), cv2.IMREAD_GRAYSCALE)
    if truth is None:
        raise InputError(item.annotation, "mask cannot be read as an image")
    h, w = truth.shape
    nucleus_ids, cell_ids = _labels(slide, "nuclei", h, w), _labels(slide, "cells", h, w)
    nuclei, cells = nucleus_ids > 0, cell_ids > 0
    true_nucleus, true_cell = truth >= 192, truth >= 64  # 0 / 128 / 255 with stray greys
    touching = np.setdiff1d(np.unique(cell_ids[true_cell]), [0])
    return {
        "nucleus_dice": dice_score(nuclei, true_nucleus),
        "nucleus_iou": iou_score(nuclei, true_nucleus),
        "cell_dice": dice_score(cells, true_cell),
        "cell_iou": iou_score(cells, true_cell),
        "annotated_nucleus_dice": dice_score(np.isin(nucleus_ids, touching), true_nucleus),
        "annotated_cell_dice": dice_score(np.isin(cell_ids, touching), true_cell),
    }


def _shape_scores(item: Annotated, slide: RunSlide) -> dict[str, Any]:
    width, height = image_size(item.image)
    boxes, points = read_shapes(item, width, height)
    wbc_boxes = [b for b in boxes if b.label.lower() in WBC_LABELS]
    wbc_points = [p for p in points if p.label.lower() in WBC_LABELS]
    pred = slide.centroids
    if boxes:
        matched = match_points_in_boxes(pred, wbc_boxes)
    else:
        radius = POINT_MATCH_UM / slide.pixel_size_um if slide.pixel_size_um > 0 else 0.0
        matched = match_points_to_points(pred, wbc_points, radius)
    row: dict[str, Any] = {
        "wbc_true": len(wbc_boxes) + len(wbc_points),
        "wbc_pred": len(pred),
        "wbc_matched": matched,
    }
    if boxes:
        row["rbc_true"] = sum(b.label.lower() == "rbc" for b in boxes)
        row["rbc_pred"] = slide.rbc_count
        row["platelet_true"] = sum(b.label.lower().startswith("platelet") for b in boxes)
        row["platelet_pred"] = slide.platelet_count
    return row


def score_images(
    items: Sequence[Annotated], slides: Sequence[RunSlide], source: str
) -> list[dict[str, Any]]:
    """One row of metrics per annotated image (a failed or missing slide scores 0)."""
    rows = []
    for item in items:
        slide = match_slide(item.image, slides)
        row: dict[str, Any] = {"source": source, "image": item.image.name}
        if slide is None or slide.status != "ok":
            row["status"] = "missing" if slide is None else slide.status
            if item.layout == "masks":
                row.update(dict.fromkeys(MASK_METRICS, 0.0))
            else:
                row.update(_shape_scores(item, dataclasses.replace(_EMPTY, slide=item.image.name)))
            rows.append(row)
            continue
        row["status"] = "ok"
        row.update(
            _mask_scores(item, slide) if item.layout == "masks" else _shape_scores(item, slide)
        )
        rows.append(row)
    return rows


_EMPTY = RunSlide("", "", "failed", None, np.zeros((0, 2)), 0, 0, math.nan)


def _f1(tp: int, n_true: int, n_pred: int) -> tuple[float, float, float]:
    recall = tp / n_true if n_true else math.nan
    precision = tp / n_pred if n_pred else math.nan
    f1 = 2 * tp / (n_true + n_pred) if n_true + n_pred else math.nan
    return precision, recall, f1


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Overall metrics per source and over all rows: mean Dice/IoU, pooled P/R/F1, count errors.

    Count errors are mean absolute relative errors over images with at least one true cell.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["source"]), []).append(row)
    if len(groups) > 1:
        groups["all"] = list(rows)
    out = []
    for name, group in groups.items():
        summary: dict[str, Any] = {"source": name, "images": len(group)}
        summary["failed"] = sum(r["status"] != "ok" for r in group)
        for key in MASK_METRICS:
            values = [r[key] for r in group if key in r]
            if values:
                summary[key] = float(np.mean(values))
                summary[f"{key}_median"] = float(np.median(values))
        if any("wbc_true" in r for r in group):
            det = [r for r in group if "wbc_true" in r]
            p, rc, f1 = _f1(
                *(sum(int(r[k]) for r in det) for k in ("wbc_matched", "wbc_true", "wbc_pred"))
            )
            summary.update(wbc_precision=p, wbc_recall=rc, wbc_f1=f1)
            for kind in ("wbc", "rbc", "platelet"):
                errs = [
                    abs(int(r[f"{kind}_pred"]) - int(r[f"{kind}_true"])) / int(r[f"{kind}_true"])
                    for r in det
                    if r["status"] == "ok" and int(r.get(f"{kind}_true", 0)) > 0
                ]
                if errs:
                    summary[f"{kind}_count_error"] = float(np.mean(errs))
        out.append(summary)
    return out


def run_model(
    source: DataSource, items: Sequence[Annotated], model: str, config: ProcessConfig, work: Path
) -> list[RunSlide]:
    """Process ``items`` with ``model`` (the source's pixel size given, when known).

    Args:
        source: The dataset the images belong to.
        items: Its images to process.
        model: ``--model`` value.
        config: Base settings.
        work: Folder for the run's report and masks.
    """
    from smearscan.batch import process_batch

    cfg = config.with_overrides(model=model)
    if source.pixel_size_um is not None:
        cfg = dataclasses.replace(cfg, scale=ScaleConfig(pixel_size_um=source.pixel_size_um))
    batch = process_batch([i.image for i in items], work / "report.xlsx", cfg)
    return run_slides_from_results(batch.results)


def quiet_config(config: ProcessConfig | None = None) -> ProcessConfig:
    """``config`` (default settings when None) without previews or probability maps."""
    base = config or ProcessConfig()
    output = dataclasses.replace(base.output, write_previews=False, write_probabilities=False)
    return dataclasses.replace(base, output=output)


def evaluate(
    sources: Sequence[DataSource],
    *,
    model: str | None = None,
    run_report: Path | None = None,
    work_dir: Path,
    config: ProcessConfig | None = None,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score a model (processing the images into ``work_dir``) or an earlier run.

    Args:
        sources: Annotated datasets (``PATH[@UM]``: the pixel size is given to ``process``).
        model: ``--model`` value to run; exactly one of ``model`` and ``run_report``.
        run_report: ``OUT.xlsx`` of an earlier ``process`` run over the same images.
        work_dir: Where the run writes its outputs (one folder per dataset).
        config: Base settings of the run (previews are never written).
        limit: Score at most this many images per dataset.

    Returns:
        ``(per-image rows, overall rows)``.

    Raises:
        DatasetError: Both or neither of ``model`` and ``run_report``, or a bad dataset.
        InputError: An unreadable report.
    """
    if (model is None) == (run_report is None):
        raise DatasetError("give either a model to run or the report of an earlier run")
    base = quiet_config(config)
    earlier = read_run(run_report) if run_report is not None else []
    rows: list[dict[str, Any]] = []
    for i, source in enumerate(sources):
        items = list_annotated(source.path)[:limit]
        if model is not None:
            slides = run_model(source, items, model, base, work_dir / f"{i + 1}")
        else:
            slides = earlier
        rows.extend(score_images(items, slides, source.name))
        log.info("%s: scored %d images", source.name, len(items))
    return rows, summarise(rows)


def write_scores(
    path: Path, rows: Sequence[Mapping[str, Any]], overall: Sequence[Mapping[str, Any]]
) -> list[Path]:
    """Write ``.xlsx`` (sheets Overall and PerImage) or ``.csv`` (+ ``_overall.csv``).

    Raises:
        DatasetError: Another suffix.
    """
    from smearscan.atomic import atomic_write

    per_image, summary = pd.DataFrame(list(rows)), pd.DataFrame(list(overall))
    suffix = path.suffix.lower()
    if suffix == ".xlsx":

        def write(tmp: Path) -> None:
            with pd.ExcelWriter(tmp, engine="openpyxl") as xw:
                summary.to_excel(xw, sheet_name="Overall", index=False)
                per_image.to_excel(xw, sheet_name="PerImage", index=False)

        atomic_write(path, write)
        return [path]
    if suffix == ".csv":
        second = path.with_name(f"{path.stem}_overall.csv")
        atomic_write(path, lambda tmp: per_image.to_csv(tmp, index=False))
        atomic_write(second, lambda tmp: summary.to_csv(tmp, index=False))
        return [path, second]
    raise DatasetError(f"--out must end in .xlsx or .csv, got {path}")
