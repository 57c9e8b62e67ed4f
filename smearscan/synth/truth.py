"""Ground truth of a synthetic field: the :class:`SynthField` record and its WBC table."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from smearscan.synth.stain import StainStyle


@dataclass(frozen=True)
class WbcTruth:
    """Exact truth of one WBC (pixels of the field, x = column, y = row).

    Attributes:
        id: Instance id, equal to its value in ``SynthField.cells`` and ``.nuclei``.
        cell_type: neutrophil, lymphocyte, monocyte, eosinophil, basophil, or
            blast (only when the field was generated with ``blasts > 0``).
        centroid_x: Centroid column of the cell mask, pixels.
        centroid_y: Centroid row of the cell mask, pixels.
        bbox_x0: First column of the cell mask.
        bbox_y0: First row of the cell mask.
        bbox_x1: Last column + 1 (exclusive).
        bbox_y1: Last row + 1 (exclusive).
        area_px: Cell area (cytoplasm + nucleus) visible in the field, pixels.
        nucleus_area_px: Nucleus area, pixels.
        n_lobes: Number of nucleus lobes (1 for round, kidney or folded nuclei).
        diameter_um: Nominal cell diameter drawn by the generator, micrometres.
        touching_ids: Ids of the WBCs whose masks touch this one (8-connectivity).
        touches_edge: Whether the cell mask reaches the border of the field.
        border_line: ``"x=V"``/``"y=V"`` when the cell was centred on that tile-border line.
    """

    id: int
    cell_type: str
    centroid_x: float
    centroid_y: float
    bbox_x0: int
    bbox_y0: int
    bbox_x1: int
    bbox_y1: int
    area_px: int
    nucleus_area_px: int
    n_lobes: int
    diameter_um: float
    touching_ids: tuple[int, ...] = ()
    touches_edge: bool = False
    border_line: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        out = asdict(self)
        out["touching_ids"] = list(self.touching_ids)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WbcTruth:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "touching_ids": tuple(int(i) for i in data["touching_ids"])})


@dataclass
class SynthField:
    """A synthetic smear field and its exact ground truth.

    Truth maps are the rendered geometry before blur and noise; where objects
    overlap, the one drawn last (WBCs over platelets over RBCs, and the second
    cell of a touching pair over the first) owns the pixel.

    Attributes:
        image: uint8 ``(H, W, 3)`` RGB camera image.
        classes: uint8 ``(H, W)``: 0 background, 1 RBC, 2 WBC cytoplasm,
            3 WBC nucleus, 4 platelet (``SEMANTIC_CLASSES`` order).
        cells: int32 ``(H, W)``: WBC instance ids ``1..n`` (0 elsewhere).
        nuclei: int32 ``(H, W)``: nucleus pixels carry their cell's id.
        rbcs: int32 ``(H, W)``: visible RBC instance ids ``1..n_rbc``.
        platelets: int32 ``(H, W)``: platelet instance ids ``1..n_platelets``.
        pixel_size_um: Pixel size, micrometres per pixel.
        wbcs: One record per WBC, ordered by id.
        n_rbc: Number of RBCs with at least one visible pixel.
        n_rbc_touching_edge: How many of them are cut by the field border.
        n_platelets: Number of platelets.
        seed: Seed of the generator.
        stain: Stain style used.
        border_positions_px: Tile-border positions requested.
        touching_pairs: Planned touching pairs ``(id_a, id_b)``, ``id_a < id_b``.
    """

    image: np.ndarray = field(repr=False)
    classes: np.ndarray = field(repr=False)
    cells: np.ndarray = field(repr=False)
    nuclei: np.ndarray = field(repr=False)
    rbcs: np.ndarray = field(repr=False)
    platelets: np.ndarray = field(repr=False)
    pixel_size_um: float
    wbcs: list[WbcTruth]
    n_rbc: int
    n_rbc_touching_edge: int
    n_platelets: int
    seed: int
    stain: StainStyle
    border_positions_px: tuple[int, ...] = ()
    touching_pairs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def width(self) -> int:
        """Field width, pixels."""
        return int(self.classes.shape[1])

    @property
    def height(self) -> int:
        """Field height, pixels."""
        return int(self.classes.shape[0])

    @property
    def n_wbc(self) -> int:
        """Number of WBCs."""
        return len(self.wbcs)

    def counts_by_type(self) -> dict[str, int]:
        """WBC count per cell type (types absent from the field are left out)."""
        return dict(sorted(Counter(w.cell_type for w in self.wbcs).items()))

    def metadata(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-friendly (the ``_truth.json`` content)."""
        return {
            "format": "smearscan-synth-truth",
            "version": 1,
            "width": self.width,
            "height": self.height,
            "pixel_size_um": self.pixel_size_um,
            "seed": self.seed,
            "classes": ["background", "rbc", "wbc_cytoplasm", "wbc_nucleus", "platelet"],
            "border_positions_px": list(self.border_positions_px),
            "n_wbc": self.n_wbc,
            "wbc_counts": self.counts_by_type(),
            "n_rbc": self.n_rbc,
            "n_rbc_touching_edge": self.n_rbc_touching_edge,
            "n_platelets": self.n_platelets,
            "touching_pairs": [list(p) for p in self.touching_pairs],
            "stain": self.stain.to_dict(),
            "wbcs": [w.to_dict() for w in self.wbcs],
        }


@dataclass(frozen=True)
class CellInfo:
    """Generator facts about one WBC that the masks do not tell (type, lobes, nominal size)."""

    cell_type: str
    n_lobes: int
    diameter_um: float
    border_line: str | None


def wbc_records(cells: np.ndarray, nuclei: np.ndarray, infos: list[CellInfo]) -> list[WbcTruth]:
    """Measure every WBC of final truth maps.

    Args:
        cells: int32 ``(H, W)`` WBC ids ``1..n`` (final ids).
        nuclei: int32 ``(H, W)`` nucleus ids.
        infos: Generator facts per id (``infos[id - 1]``).

    Returns:
        One record per id, ordered by id.
    """
    height, width = cells.shape
    records = []
    kernel = np.ones((3, 3), np.uint8)
    for idx, sl in enumerate(ndimage.find_objects(cells), start=1):
        if sl is None:
            continue
        ys, xs = sl
        grown = (
            slice(max(0, ys.start - 1), min(height, ys.stop + 1)),
            slice(max(0, xs.start - 1), min(width, xs.stop + 1)),
        )
        window = cells[grown]
        mask = window == idx
        rows, cols = np.nonzero(mask)
        ring = cv2.dilate(mask.astype(np.uint8), kernel) > 0
        touching = sorted({int(v) for v in np.unique(window[ring]) if v not in (0, idx)})
        info = infos[idx - 1]
        records.append(
            WbcTruth(
                id=idx,
                cell_type=info.cell_type,
                centroid_x=float(cols.mean() + grown[1].start),
                centroid_y=float(rows.mean() + grown[0].start),
                bbox_x0=xs.start,
                bbox_y0=ys.start,
                bbox_x1=xs.stop,
                bbox_y1=ys.stop,
                area_px=int(mask.sum()),
                nucleus_area_px=int((nuclei[grown] == idx).sum()),
                n_lobes=info.n_lobes,
                diameter_um=round(info.diameter_um, 3),
                touching_ids=tuple(touching),
                touches_edge=bool(
                    min(xs.start, ys.start) == 0 or xs.stop == width or ys.stop == height
                ),
                border_line=info.border_line,
            )
        )
    return records


def relabel_sorted(labels: np.ndarray, order_keys: np.ndarray | None = None) -> np.ndarray:
    """Renumber the present labels of a map to ``1..n`` in place.

    Args:
        labels: int32 ``(H, W)`` label map, modified in place.
        order_keys: Optional float ``(max_label + 1, 2)``: ``(y, x)`` sort keys per
            old label; without it the old label order is kept.

    Returns:
        int64 ``(max_label + 1,)`` lookup table old label -> new label (0 for absent).
    """
    present = np.unique(labels)
    present = present[present > 0]
    if order_keys is not None and present.size:
        keys = order_keys[present]
        present = present[np.lexsort((keys[:, 1], keys[:, 0]))]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int64)
    lut[present] = np.arange(1, present.size + 1)
    labels[...] = lut[labels]
    return lut
