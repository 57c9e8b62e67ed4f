"""The cell stage of one slide: instances, instance labels, morphometry, types, Cells rows.

Runs after segmentation on the slide's Zarr group: reads ``labels/classes``
window by window, finds the cells (:mod:`smearscan.instances`), writes
``labels/cells`` and ``labels/nuclei`` (int32, cell id = label value, ids in
centroid order), measures each cell (:mod:`smearscan.morphometry`) on the
slide's pixels at the model scale, types it (:mod:`smearscan.classify`) and
builds the rows of the report's ``Cells`` sheet, with positions converted to
pixels of the original image (x = column, y = row).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from smearscan.cell_types import CELL_TYPES
from smearscan.classify import CellClassifier, classify_cells
from smearscan.config import CellsConfig, ClassifyConfig
from smearscan.instances import Cell, SlideInstances, find_instances, paint_labels
from smearscan.limits import check_deadline
from smearscan.morphometry import measure_cells
from smearscan.resample import Reader, resample_window, to_source
from smearscan.results import SlideResult
from smearscan.tiling import Window
from smearscan.zarr_store import SlideStore, create_instance_labels

log = logging.getLogger(__name__)

#: Side of the windows in which labels are written and cells measured (model px).
BLOCK_PX = 2048


def _blocks(height: int, width: int) -> list[Window]:
    return [
        Window(y, min(height, y + BLOCK_PX), x, min(width, x + BLOCK_PX))
        for y in range(0, height, BLOCK_PX)
        for x in range(0, width, BLOCK_PX)
    ]


def _bbox(cell: Cell) -> Window:
    h, w = cell.mask.shape
    return Window(cell.y0, cell.y0 + h, cell.x0, cell.x0 + w)


def write_instance_labels(store: SlideStore, cells: list[Cell], pixel_size_um: float) -> None:
    """Write ``labels/cells`` and ``labels/nuclei`` block by block (cell id = index + 1)."""
    cells_array = create_instance_labels(store, "cells", pixel_size_um)
    nuclei_array = create_instance_labels(store, "nuclei", pixel_size_um)
    height, width = store.classes.shape
    by_block: dict[Window, list[int]] = defaultdict(list)
    blocks = _blocks(height, width)
    for index, cell in enumerate(cells):
        box = _bbox(cell)
        for block in blocks:
            if block.intersect(box) is not None:
                by_block[block].append(index)
    for block, indices in by_block.items():
        check_deadline("cells")
        chosen = set(indices)
        subset = [cells[i] if i in chosen else None for i in range(max(indices) + 1)]
        for array, nuclei in ((cells_array, False), (nuclei_array, True)):
            labels = paint_labels(subset, block, nuclei=nuclei)
            array[block.y0 : block.y1, block.x0 : block.x1] = labels


def _measure_block(
    cells: list[tuple[int, Cell]],
    read: Reader,
    s: float,
    pixel_size_um: float,
    rbc_diameter_px: float,
) -> pd.DataFrame:
    """Morphometry of some cells, measured on the window that holds them all.

    Args:
        cells: ``(cell_id, cell)`` pairs, cell ids 1-based as in ``labels/cells``.

    Returns:
        One morphometry row per cell, ``cell_id`` equal to the given ids.
    """
    boxes = [_bbox(c) for _, c in cells]
    window = Window(
        min(b.y0 for b in boxes),
        max(b.y1 for b in boxes),
        min(b.x0 for b in boxes),
        max(b.x1 for b in boxes),
    )
    image = resample_window(read, window, s)
    # paint_labels paints entry k with id k + 1: cell id i goes to entry i - 1.
    ordered: list[Cell | None] = [None] * max(i for i, _ in cells)
    for i, cell in cells:
        ordered[i - 1] = cell
    frame = measure_cells(
        image,
        paint_labels(ordered, window),
        paint_labels(ordered, window, nuclei=True),
        pixel_size_um,
        source_pixels_per_pixel=1 / s,
        rbc_diameter_px=None if math.isnan(rbc_diameter_px) else rbc_diameter_px,
    )
    return frame


def _rows(
    found: SlideInstances,
    features: pd.DataFrame,
    types: pd.DataFrame,
    slide: str,
    s: float,
    shape: tuple[int, int],
) -> list[dict[str, Any]]:
    rows = []
    for cell_id, cell in enumerate(found.cells, start=1):
        box = _bbox(cell)
        feats = features.loc[cell_id].to_dict() if cell_id in features.index else {}
        kind = types.loc[cell_id] if cell_id in types.index else None
        row: dict[str, Any] = {
            "slide": slide,
            "cell_id": cell_id,
            "centroid_x": round(float(to_source(cell.centroid_x, s)), 2),
            "centroid_y": round(float(to_source(cell.centroid_y, s)), 2),
            "bbox_x0": math.floor(box.x0 / s),
            "bbox_y0": math.floor(box.y0 / s),
            "bbox_x1": math.ceil(box.x1 / s),
            "bbox_y1": math.ceil(box.y1 / s),
            "cell_type": kind["cell_type"] if kind is not None else "other",
            "type_confidence": float(kind["type_confidence"]) if kind is not None else 0.0,
            "blast_probability": float(kind["blast_probability"]) if kind is not None else 0.0,
            "is_blast": bool(kind["is_blast"]) if kind is not None else False,
            "touches_edge": bool(
                box.y0 == 0 or box.x0 == 0 or box.y1 == shape[0] or box.x1 == shape[1]
            ),
        }
        feats.pop("touches_edge", None)
        row.update({k: v for k, v in feats.items() if k != "cell_id"})
        row["shape_reliable"] = not row["touches_edge"]
        rows.append(row)
    return rows


def run_cell_stage(
    store: SlideStore,
    read: Reader,
    s: float,
    pixel_size_um: float,
    result: SlideResult,
    config: CellsConfig,
    classify: ClassifyConfig | None = None,
    classifier: CellClassifier | None = None,
) -> float | None:
    """Find, label, measure and type the cells of one segmented slide.

    Args:
        store: The slide's store, ``labels/classes`` already written.
        read: Reader of the source pixels.
        s: Model pixels per source pixel.
        pixel_size_um: Model-scale pixel size.
        result: Filled with counts and the Cells rows.
        config: Instance thresholds.
        classify: Blast thresholds (default: :class:`ClassifyConfig` defaults).
        classifier: The cell classifier, or None for the morphometric rules.

    Returns:
        The median RBC diameter found, in µm at the slide's assumed pixel size
        (the evidence :func:`smearscan.plausibility.evidence_from_result` takes;
        its ``n`` is ``result.rbc_count``), or None when no RBC was found.
    """
    height, width = store.classes.shape

    def read_classes(w: Window) -> np.ndarray:
        check_deadline("cells")  # once per block: --slide-timeout holds inside the stage
        return np.asarray(store.classes[w.y0 : w.y1, w.x0 : w.x1])

    found = find_instances(read_classes, height, width, pixel_size_um, config)
    write_instance_labels(store, found.cells, pixel_size_um)
    groups: dict[Window, list[tuple[int, Cell]]] = defaultdict(list)
    blocks = _blocks(height, width)
    for cell_id, cell in enumerate(found.cells, start=1):
        core = next(
            b for b in blocks if b.y0 <= cell.centroid_y < b.y1 and b.x0 <= cell.centroid_x < b.x1
        )
        groups[core].append((cell_id, cell))
    frames = []
    for group in groups.values():
        check_deadline("cells")
        frames.append(_measure_block(group, read, s, pixel_size_um, found.rbc_diameter_px))
    features = (
        pd.concat(frames).set_index("cell_id")
        if frames
        else pd.DataFrame(index=pd.Index([], name="cell_id"))
    )
    ids = features.index.to_numpy()
    centres = np.array(
        [
            [
                to_source(found.cells[i - 1].centroid_x, s),
                to_source(found.cells[i - 1].centroid_y, s),
            ]
            for i in ids
        ],
        dtype=np.float64,
    ).reshape(-1, 2)
    types = classify_cells(
        classifier,
        features,
        classify or ClassifyConfig(),
        read=read,
        centres_xy=centres,
        source_pixel_size_um=pixel_size_um * s,
    )
    result.cells = _rows(found, features, types, result.slide, s, (height, width))
    result.wbc_count = len(found.cells)
    result.rbc_count = len(found.rbc_centres)
    result.platelet_count = len(found.platelet_centres)
    counts = pd.Series([r["cell_type"] for r in result.cells], dtype=object).value_counts()
    result.cell_counts = {t: int(counts.get(t, 0)) for t in CELL_TYPES}
    log.info(
        "%s: %d WBC, %d RBC, %d platelets",
        result.slide,
        result.wbc_count,
        result.rbc_count,
        result.platelet_count,
    )
    if math.isnan(found.rbc_diameter_px):
        return None
    return found.rbc_diameter_px * pixel_size_um
