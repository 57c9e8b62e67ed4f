"""From the semantic map to individual cells: WBC instances, RBC and platelet counts.

Input is the ``labels/classes`` map of a slide (uint8, model scale; values of
:data:`~smearscan.models.base.SEMANTIC_CLASSES`). Output:

* WBC instances: each white cell is one nucleus (its 2-5 lobes grouped when
  they lie within ``lobe_link_um`` of each other) plus its share of the
  cytoplasm of its clump: a nucleus-seeded watershed on the clump's distance
  transform, so touching cells part along the neck between them; the lobes
  of one neutrophil stay one cell. Debris and stain specks are removed
  by minimum nucleus and cell areas in µm².
* RBC count: peaks of the distance transform of the RBC mask (overlapping
  red cells in a clump each keep their own peak), at least a third of an
  RBC diameter apart.
* Platelet count: small connected platelet-class components within the
  platelet area range.

Large slides are processed in windows with a halo larger than the largest
cell; an object belongs to the window whose core holds its centroid (the
ownership rule), so each cell is counted exactly once whatever the window
grid, and cell ids are assigned afterwards in a stable order (by centroid
row, then column).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from smearscan.config import CellsConfig
from smearscan.tiling import Window

log = logging.getLogger(__name__)

BACKGROUND, RBC, CYTOPLASM, NUCLEUS, PLATELET = range(5)


@dataclass
class Cell:
    """One WBC found in a window, in slide coordinates (model scale).

    Attributes:
        y0: Top row of ``mask`` in the slide.
        x0: Left column of ``mask`` in the slide.
        mask: bool ``(h, w)`` cell pixels (nucleus and cytoplasm).
        nucleus: bool ``(h, w)`` nucleus pixels of the cell.
        centroid_y: Row of the cell's centroid (float, slide pixels).
        centroid_x: Column of the centroid.
    """

    y0: int
    x0: int
    mask: np.ndarray
    nucleus: np.ndarray
    centroid_y: float
    centroid_x: float


@dataclass
class SlideInstances:
    """Everything the instance stage found on one slide.

    Attributes:
        cells: WBCs ordered by centroid (row, column); cell id = index + 1.
        rbc_centres: float ``(n, 2)`` RBC centres (row, column), model pixels.
        rbc_diameter_px: Median RBC diameter in model pixels (NaN when none).
        platelet_centres: float ``(m, 2)`` platelet centres (row, column).
    """

    cells: list[Cell] = field(default_factory=list)
    rbc_centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    rbc_diameter_px: float = math.nan
    platelet_centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, round(radius_px))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _split_clump(component: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """Split one WBC clump among its nuclei by a seeded distance-transform watershed.

    Each nucleus floods the clump downhill on the negated distance to the clump's
    edge, so two touching round cells part along their neck (where the clump is
    narrowest), not half-way between their nuclei: a small lymphocyte beside a
    large neutrophil keeps its own rim of cytoplasm.

    Args:
        component: bool ``(h, w)`` the clump.
        markers: int32 ``(h, w)`` nucleus ids inside the clump (0 elsewhere).

    Returns:
        int32 ``(h, w)`` ids over the clump. The result depends only on the clump
        (its bounding box), not on where a processing window starts.
    """
    ids = np.unique(markers[markers > 0])
    if len(ids) == 1:
        return np.where(component, ids[0], 0).astype(np.int32)
    padded = np.pad(component, 1)
    dist = ndi.distance_transform_edt(padded)[1:-1, 1:-1]
    return watershed(-dist, markers, mask=component).astype(np.int32)


def wbc_labels(classes: np.ndarray, pixel_size_um: float, config: CellsConfig) -> np.ndarray:
    """Label the WBCs of a class map window.

    Args:
        classes: uint8 ``(H, W)`` semantic map.
        pixel_size_um: µm per pixel of ``classes``.
        config: Thresholds.

    Returns:
        int32 ``(H, W)``: 0 outside cells, one label per cell (window-local).
    """
    px2 = pixel_size_um**2
    nucleus = (classes == NUCLEUS).astype(np.uint8)
    if not nucleus.any():
        return np.zeros(classes.shape, np.int32)
    # lobes: small fragments reach out by lobe_link_um; large ones (whole nuclei) do not
    fragments, _ = ndi.label(nucleus)
    lobe_sized = np.bincount(fragments.ravel()) * px2 < config.lobe_max_area_um2
    lobe_sized[0] = False
    lobe_reach = cv2.dilate(
        lobe_sized[fragments].astype(np.uint8), _disk(config.lobe_link_um / pixel_size_um)
    )
    groups, _ = ndi.label(nucleus | lobe_reach)
    markers = np.where(nucleus > 0, groups, 0).astype(np.int32)
    # drop nucleus groups too small to be a WBC nucleus (platelets on a cell, specks)
    small = np.flatnonzero(np.bincount(markers.ravel()) * px2 < config.min_nucleus_area_um2)
    markers[np.isin(markers, small)] = 0
    reach = ndi.distance_transform_edt(markers == 0) * pixel_size_um
    wbc = ((classes == NUCLEUS) | (classes == CYTOPLASM)) & (reach <= config.cytoplasm_reach_um)
    clumps, _ = ndi.label(wbc)
    labels = np.zeros(classes.shape, np.int32)
    for index, sl in enumerate(ndi.find_objects(clumps), start=1):
        if sl is None or not markers[sl][clumps[sl] == index].any():
            continue  # cytoplasm-coloured region without a nucleus: not a cell
        component = clumps[sl] == index
        split = _split_clump(component, np.where(component, markers[sl], 0))
        labels[sl][component] = split[component]
    sizes = np.bincount(labels.ravel())
    tiny = np.flatnonzero(sizes * px2 < config.min_cell_area_um2)
    labels[np.isin(labels, tiny[tiny > 0])] = 0
    return labels


def _cells_from_labels(labels: np.ndarray, classes: np.ndarray, oy: int, ox: int) -> list[Cell]:
    cells = []
    for index, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        mask = labels[sl] == index
        ys, xs = np.nonzero(mask)
        cells.append(
            Cell(
                y0=oy + sl[0].start,
                x0=ox + sl[1].start,
                mask=mask,
                nucleus=mask & (classes[sl] == NUCLEUS),
                centroid_y=oy + sl[0].start + float(ys.mean()),
                centroid_x=ox + sl[1].start + float(xs.mean()),
            )
        )
    return cells


def rbc_centres(
    classes: np.ndarray, pixel_size_um: float, config: CellsConfig
) -> tuple[np.ndarray, np.ndarray]:
    """RBC centres and their inscribed radii in a class map window.

    Returns:
        float ``(n, 2)`` centres (row, column) and float ``(n,)`` radii, in pixels.
    """
    rbc = (classes == RBC).astype(np.uint8)
    if not rbc.any():
        return np.zeros((0, 2)), np.zeros(0)
    # RBC pale centres may be classed background: close them before measuring
    radius_px = config.rbc_diameter_um / pixel_size_um / 2
    closed = cv2.morphologyEx(rbc, cv2.MORPH_CLOSE, _disk(radius_px / 3))
    dist = cv2.distanceTransform(closed, cv2.DIST_L2, 5)
    peaks = peak_local_max(
        dist,
        min_distance=max(1, int(radius_px * 0.66)),
        threshold_abs=radius_px * 0.45,
        exclude_border=False,
    )
    return peaks.astype(np.float64), dist[peaks[:, 0], peaks[:, 1]].astype(np.float64)


def platelet_centres(classes: np.ndarray, pixel_size_um: float, config: CellsConfig) -> np.ndarray:
    """Centres (row, column) of platelet components within the platelet area range."""
    labels, n = ndi.label(classes == PLATELET)
    if n == 0:
        return np.zeros((0, 2))
    areas = np.bincount(labels.ravel())[1:] * pixel_size_um**2
    lo, hi = config.platelet_area_um2
    keep = np.flatnonzero((areas >= lo) & (areas <= hi)) + 1
    centres = ndi.center_of_mass(np.ones_like(labels), labels, keep)
    return np.asarray(centres, dtype=np.float64).reshape(-1, 2)


def _windows(height: int, width: int, core: int, halo: int) -> Iterator[tuple[Window, Window]]:
    for y in range(0, height, core):
        for x in range(0, width, core):
            inner = Window(y, min(height, y + core), x, min(width, x + core))
            outer = Window(
                max(0, y - halo),
                min(height, y + core + halo),
                max(0, x - halo),
                min(width, x + core + halo),
            )
            yield inner, outer


def _owned(points: np.ndarray, inner: Window, outer: Window) -> np.ndarray:
    """Shift window-local points to the slide and keep those inside ``inner``."""
    pts = points + np.array([outer.y0, outer.x0], dtype=np.float64)
    keep = (
        (pts[:, 0] >= inner.y0)
        & (pts[:, 0] < inner.y1)
        & (pts[:, 1] >= inner.x0)
        & (pts[:, 1] < inner.x1)
    )
    return pts[keep]


def find_instances(
    read_classes: Callable[[Window], np.ndarray],
    height: int,
    width: int,
    pixel_size_um: float,
    config: CellsConfig | None = None,
) -> SlideInstances:
    """Find WBCs, RBCs and platelets over a whole slide, window by window.

    Args:
        read_classes: Returns the uint8 class map of a window (inside the slide).
        height: Slide rows (model scale).
        width: Slide columns.
        pixel_size_um: µm per pixel of the class map.
        config: Thresholds (defaults of :class:`CellsConfig`).

    Returns:
        The slide's instances; each object counted once (centroid ownership).
    """
    config = config or CellsConfig()
    halo = math.ceil(2 * config.max_cell_diameter_um / pixel_size_um)
    core = max(config.window_px - 2 * halo, 256)
    cells: list[Cell] = []
    rbcs, radii, platelets = [], [], []
    for inner, outer in _windows(height, width, core, halo):
        classes = read_classes(outer)
        for cell in _cells_from_labels(
            wbc_labels(classes, pixel_size_um, config), classes, outer.y0, outer.x0
        ):
            if inner.y0 <= cell.centroid_y < inner.y1 and inner.x0 <= cell.centroid_x < inner.x1:
                cells.append(cell)
        centres, r = rbc_centres(classes, pixel_size_um, config)
        shifted = centres + np.array([outer.y0, outer.x0], dtype=np.float64)
        inside = (
            (shifted[:, 0] >= inner.y0)
            & (shifted[:, 0] < inner.y1)
            & (shifted[:, 1] >= inner.x0)
            & (shifted[:, 1] < inner.x1)
        )
        rbcs.append(shifted[inside])
        radii.append(r[inside])
        platelets.append(_owned(platelet_centres(classes, pixel_size_um, config), inner, outer))
    cells.sort(key=lambda c: (c.centroid_y, c.centroid_x))
    all_radii = np.concatenate(radii) if radii else np.zeros(0)
    return SlideInstances(
        cells=cells,
        rbc_centres=np.concatenate(rbcs) if rbcs else np.zeros((0, 2)),
        rbc_diameter_px=float(2 * np.median(all_radii)) if all_radii.size else math.nan,
        platelet_centres=np.concatenate(platelets) if platelets else np.zeros((0, 2)),
    )


def paint_labels(
    cells: Sequence[Cell | None], window: Window, *, nuclei: bool = False
) -> np.ndarray:
    """Label image of a window: cell ``i`` (0-based in ``cells``) painted with id ``i + 1``.

    Args:
        cells: Cells in id order; ``None`` entries keep their id unused.
        window: The slide window to paint.
        nuclei: Paint only the nucleus pixels of each cell.

    Returns:
        int32 ``(window.height, window.width)``.
    """
    out = np.zeros((window.height, window.width), np.int32)
    for cell_id, cell in enumerate(cells, start=1):
        if cell is None:
            continue
        h, w = cell.mask.shape
        box = Window(cell.y0, cell.y0 + h, cell.x0, cell.x0 + w).intersect(window)
        if box is None:
            continue
        src = (cell.nucleus if nuclei else cell.mask)[
            box.y0 - cell.y0 : box.y1 - cell.y0, box.x0 - cell.x0 : box.x1 - cell.x0
        ]
        dst = out[box.y0 - window.y0 : box.y1 - window.y0, box.x0 - window.x0 : box.x1 - window.x0]
        dst[src] = cell_id
    return out
