"""Per-cell morphometry of segmented white blood cells, in pixels and micrometres.

:func:`measure_cells` turns a WBC instance map (``cells``), its nucleus map
(``nuclei``, same ids) and the RGB image into one table row per cell: the
morphometry columns of the ``Cells`` sheet (DESIGN.md, output contract).

The label arrays are usually at the model scale; ``pixel_size_um`` is the
micrometres per pixel of those arrays, and ``source_pixels_per_pixel`` (how
many original-image pixels one array pixel spans) converts the ``*_px``
columns to pixels of the original image (lengths * factor, areas * factor**2).

Columns (in this order; "px" = original-image pixels, "array px" = pixels of
the given arrays):

- ``cell_id`` (int): the cell's label in ``cells``.
- ``area_px`` / ``area_um2``: cell area (nucleus + cytoplasm), px² / µm².
- ``perimeter_px`` / ``perimeter_um``: cell perimeter, px / µm (Crofton
  estimate, ``regionprops`` ``perimeter_crofton``: unbiased for large smooth
  outlines, whereas the contour-based ``perimeter`` reads ~5 % long on discs).
- ``equivalent_diameter_px`` / ``equivalent_diameter_um``: diameter of the
  disc of the same area, ``sqrt(4 A / pi)``, px / µm.
- ``circularity``: ``4 pi A / P**2``, dimensionless, clipped to [0, 1]
  (1 = disc); NaN when the perimeter is 0.
- ``eccentricity``: of the ellipse with the same second moments, [0, 1).
- ``solidity``: area / convex-hull area, (0, 1].
- ``major_axis_px`` / ``major_axis_um``, ``minor_axis_px`` / ``minor_axis_um``:
  full axis lengths of that ellipse, px / µm.
- ``nucleus_area_px`` / ``nucleus_area_um2``: nucleus pixels inside the cell,
  px² / µm² (0 when the cell has no nucleus).
- ``cytoplasm_area_px`` / ``cytoplasm_area_um2``: cell area minus nucleus area.
- ``nc_ratio``: nucleus area / cell area (NOT nucleus / cytoplasm), [0, 1];
  DESIGN.md's "N:C ratio > 0.8" of blasts means the nucleus fills more than
  80 % of the cell. 0 for a cell without nucleus.
- ``nucleus_lobes`` (int): number of nucleus lobes, see :func:`count_lobes`
  (0 for a cell without nucleus).
- ``nucleus_circularity``: ``4 pi A / P**2`` of the nucleus, [0, 1].
- ``nucleus_mean_r/g/b``, ``nucleus_std_r/g/b``, ``cytoplasm_mean_r/g/b``,
  ``cytoplasm_std_r/g/b``: mean and population standard deviation (ddof 0)
  of the 8-bit RGB values of the region's pixels, 0-255.
- ``nucleus_mean_lab_l/a/b``, ``nucleus_std_lab_l/a/b``,
  ``cytoplasm_mean_lab_l/a/b``, ``cytoplasm_std_lab_l/a/b``: the same in CIE
  L*a*b* (``skimage.color.rgb2lab``, D65 / 2°): L* 0-100, a* and b* roughly
  -128..127 (the ``lab_`` infix keeps Lab b* apart from RGB blue ``_b``).
- ``glcm_contrast``, ``glcm_homogeneity``, ``glcm_energy``,
  ``glcm_correlation``: grey-level co-occurrence texture of the nucleus
  (grayscale quantised to 32 levels, pairs at 1 array px, 0°/45°/90°/135°
  averaged, symmetric; pairs touching non-nucleus pixels excluded);
  dimensionless (contrast in squared grey levels of the 32-level scale;
  correlation is 1 for a flat nucleus).
- ``size_vs_rbc``: equivalent diameter / median RBC diameter (both array px),
  NaN when the RBC diameter is unknown.
- ``touches_edge`` (bool): the cell mask reaches the border of the arrays.
- ``shape_reliable`` (bool): ``not touches_edge``; the shape features of a cut
  cell describe only its visible part.

Nucleus features (circularity, colour, texture) are NaN for a cell without
nucleus pixels, and so are the cytoplasm colour features of a cell whose
nucleus fills it completely.
"""

from __future__ import annotations

import logging
import time
from math import isfinite

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.feature import graycomatrix, graycoprops
from skimage.measure import regionprops_table
from skimage.morphology import local_maxima

logger = logging.getLogger(__name__)

_CHANNELS = ("r", "g", "b")
_LAB = ("lab_l", "lab_a", "lab_b")
_GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")
_GLCM_LEVELS = 32
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
#: rgb2gray luminance weights (ITU-R BT.709).
_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])

#: Two distance-transform maxima are separate lobes when the saddle between them
#: is below this fraction of the lower peak (calibrated on the synthetic smears).
LOBE_SADDLE_RATIO = 0.8
#: Nuclei whose largest inscribed radius (pixels) is below this are upsampled first.
LOBE_MIN_RADIUS_PX = 10.0
#: Maxima lower than this fraction of the nucleus' largest inscribed radius are ignored.
LOBE_MIN_PEAK_FRACTION = 0.3


def _colour_columns() -> list[str]:
    cols = []
    for region in ("nucleus", "cytoplasm"):
        for space in (_CHANNELS, _LAB):
            for stat in ("mean", "std"):
                cols += [f"{region}_{stat}_{c}" for c in space]
    return cols


_COLOUR_COLUMNS = _colour_columns()

#: Every column of the table, in order (units in the module docstring).
COLUMNS: tuple[str, ...] = (
    "cell_id",
    "area_px",
    "area_um2",
    "perimeter_px",
    "perimeter_um",
    "equivalent_diameter_px",
    "equivalent_diameter_um",
    "circularity",
    "eccentricity",
    "solidity",
    "major_axis_px",
    "major_axis_um",
    "minor_axis_px",
    "minor_axis_um",
    "nucleus_area_px",
    "nucleus_area_um2",
    "cytoplasm_area_px",
    "cytoplasm_area_um2",
    "nc_ratio",
    "nucleus_lobes",
    "nucleus_circularity",
    *_COLOUR_COLUMNS,
    *(f"glcm_{p}" for p in _GLCM_PROPS),
    "size_vs_rbc",
    "touches_edge",
    "shape_reliable",
)

_CELL_PROPS = (
    "label",
    "area",
    "perimeter_crofton",
    "eccentricity",
    "solidity",
    "axis_major_length",
    "axis_minor_length",
    "bbox",
)
_INT_COLUMNS = ("cell_id", "nucleus_lobes")
_BOOL_COLUMNS = ("touches_edge", "shape_reliable")


def measure_cells(
    image: np.ndarray,
    cells: np.ndarray,
    nuclei: np.ndarray,
    pixel_size_um: float,
    *,
    source_pixels_per_pixel: float = 1.0,
    rbc_diameter_px: float | None = None,
) -> pd.DataFrame:
    """Measure every WBC of a field.

    Args:
        image: uint8 ``(H, W, 3)`` RGB image at the scale of the label arrays.
        cells: integer ``(H, W)`` WBC instance labels (0 = none); a cell is its
            nucleus plus its cytoplasm.
        nuclei: integer ``(H, W)``: nucleus pixels carry the id of their cell
            (0 elsewhere). Nucleus pixels outside their own cell are ignored.
        pixel_size_um: Micrometres per pixel of these arrays.
        source_pixels_per_pixel: Original-image pixels spanned by one pixel of
            these arrays; ``*_px`` lengths are multiplied by it, areas by its square.
        rbc_diameter_px: Median RBC diameter in pixels of these arrays, or None.

    Returns:
        One row per cell id present in ``cells``, sorted by ``cell_id``, with
        the columns :data:`COLUMNS` (units in the module docstring). An empty
        frame with those columns when ``cells`` has no cell.

    Raises:
        ValueError: On wrong shapes, dtypes or non-positive scale values.
    """
    _validate(image, cells, nuclei, pixel_size_um, source_pixels_per_pixel, rbc_diameter_px)
    started = time.perf_counter()
    nuc = np.where(nuclei == cells, nuclei, 0)
    stray = int(np.count_nonzero(nuclei)) - int(np.count_nonzero(nuc))
    if stray:
        logger.warning("%d nucleus pixels lie outside their own cell; ignored", stray)
    geometry = regionprops_table(
        cells,
        properties=_CELL_PROPS,
    )
    ids = np.asarray(geometry["label"], dtype=np.int64)
    if ids.size == 0:
        return empty_table()
    out: dict[str, np.ndarray] = {"cell_id": ids}
    out.update(_shape_columns(geometry, cells.shape, pixel_size_um, source_pixels_per_pixel))
    cell_area = np.asarray(geometry["area"], dtype=np.float64)
    out.update(_nucleus_columns(nuc, ids, cell_area, pixel_size_um, source_pixels_per_pixel))
    out.update(_colour_stats(image, cells, nuc, ids))
    out.update(_glcm_columns(image, nuc, ids))
    diameter_array_px = out["equivalent_diameter_px"] / source_pixels_per_pixel
    out["size_vs_rbc"] = (
        diameter_array_px / rbc_diameter_px
        if rbc_diameter_px is not None
        else np.full(ids.size, np.nan)
    )
    out["shape_reliable"] = ~out["touches_edge"]
    frame = pd.DataFrame({name: out[name] for name in COLUMNS})
    logger.debug("measured %d cells in %.3f s", ids.size, time.perf_counter() - started)
    return frame


def empty_table() -> pd.DataFrame:
    """An empty morphometry table with every column of :data:`COLUMNS` and its dtype."""
    data: dict[str, pd.Series] = {}
    for name in COLUMNS:
        dtype = "int64" if name in _INT_COLUMNS else "bool" if name in _BOOL_COLUMNS else "float64"
        data[name] = pd.Series([], dtype=dtype)
    return pd.DataFrame(data)


def _validate(
    image: np.ndarray,
    cells: np.ndarray,
    nuclei: np.ndarray,
    pixel_size_um: float,
    source_pixels_per_pixel: float,
    rbc_diameter_px: float | None,
) -> None:
    """Raise ValueError when the inputs do not match the documented contract."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        got = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"image must be an RGB array of shape (H, W, 3), got {got}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}; convert it first")
    for name, arr in (("cells", cells), ("nuclei", nuclei)):
        if not isinstance(arr, np.ndarray) or arr.shape != image.shape[:2]:
            got = getattr(arr, "shape", type(arr).__name__)
            raise ValueError(f"{name} must have shape {image.shape[:2]} like the image, got {got}")
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be an integer label array (int32), got {arr.dtype}")
        if arr.size and arr.min() < 0:
            raise ValueError(f"{name} must not contain negative labels")
    for name, value in (
        ("pixel_size_um", pixel_size_um),
        ("source_pixels_per_pixel", source_pixels_per_pixel),
        ("rbc_diameter_px", 1.0 if rbc_diameter_px is None else rbc_diameter_px),
    ):
        if not isfinite(float(value)) or float(value) <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _circularity(area: np.ndarray, perimeter: np.ndarray) -> np.ndarray:
    """``4 pi A / P**2`` clipped to [0, 1], NaN where ``P == 0``."""
    area = np.asarray(area, dtype=np.float64)
    perimeter = np.asarray(perimeter, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 4.0 * np.pi * area / perimeter**2
    return np.where(perimeter > 0, np.clip(value, 0.0, 1.0), np.nan)


def _shape_columns(
    props: dict[str, np.ndarray], shape: tuple[int, ...], um: float, scale: float
) -> dict[str, np.ndarray]:
    """Size and shape columns of the cells from their ``regionprops_table``."""
    area = np.asarray(props["area"], dtype=np.float64)
    lengths = {
        "perimeter": np.asarray(props["perimeter_crofton"], dtype=np.float64),
        "equivalent_diameter": np.sqrt(4.0 * area / np.pi),
        "major_axis": np.asarray(props["axis_major_length"], dtype=np.float64),
        "minor_axis": np.asarray(props["axis_minor_length"], dtype=np.float64),
    }
    out = {"area_px": area * scale**2, "area_um2": area * um**2}
    for name, value in lengths.items():
        out[f"{name}_px"] = value * scale
        out[f"{name}_um"] = value * um
    out["circularity"] = _circularity(area, lengths["perimeter"])
    out["eccentricity"] = np.asarray(props["eccentricity"], dtype=np.float64)
    out["solidity"] = np.asarray(props["solidity"], dtype=np.float64)
    height, width = shape
    out["touches_edge"] = (
        (props["bbox-0"] == 0)
        | (props["bbox-1"] == 0)
        | (props["bbox-2"] == height)
        | (props["bbox-3"] == width)
    )
    return out


def _nucleus_columns(
    nuc: np.ndarray, ids: np.ndarray, cell_area: np.ndarray, um: float, scale: float
) -> dict[str, np.ndarray]:
    """Nucleus and cytoplasm areas, N:C ratio, lobes and nucleus circularity per cell.

    ``cell_area`` is in array pixels; ``um`` and ``scale`` as in :func:`_shape_columns`.
    """
    props = regionprops_table(nuc, properties=("label", "area", "perimeter_crofton", "slice"))
    row = np.searchsorted(ids, np.asarray(props["label"], dtype=np.int64))
    area = np.zeros(ids.size)
    area[row] = props["area"]
    circ = np.full(ids.size, np.nan)
    circ[row] = _circularity(props["area"], props["perimeter_crofton"])
    lobes = np.zeros(ids.size, dtype=np.int64)
    for r, label, sl in zip(row, props["label"], props["slice"], strict=True):
        lobes[r] = count_lobes(nuc[sl] == label)
    cyto = cell_area - area
    return {
        "nucleus_area_px": area * scale**2,
        "nucleus_area_um2": area * um**2,
        "cytoplasm_area_px": cyto * scale**2,
        "cytoplasm_area_um2": cyto * um**2,
        "nc_ratio": area / cell_area,
        "nucleus_lobes": lobes,
        "nucleus_circularity": circ,
    }


def count_lobes(
    mask: np.ndarray,
    saddle_ratio: float = LOBE_SADDLE_RATIO,
    min_peak_fraction: float = LOBE_MIN_PEAK_FRACTION,
) -> int:
    """Number of lobes of a nucleus mask, robust to thin chromatin strands.

    Lobes are the maxima of the Euclidean distance transform (the centres of
    the largest inscribed discs). A maximum of height ``p`` counts as a lobe
    of its own unless, in the region ``distance >= saddle_ratio * p`` around
    it, there is a higher maximum: i.e. two maxima are separate lobes when the
    constriction (saddle) joining them is thinner than ``saddle_ratio`` times
    the lower one. A thin strand (saddle ~1 px) or a deep notch splits; the
    small bumps of a round, oval or kidney-shaped outline do not. Maxima lower
    than ``min_peak_fraction`` times the largest are ignored (specks, strands).
    Small nuclei are first upsampled (bilinear, threshold 0.5) until their
    largest inscribed radius is about :data:`LOBE_MIN_RADIUS_PX`, so that the
    ratio is not dominated by the integer steps of the distance transform.

    Args:
        mask: bool ``(h, w)`` nucleus mask (may have several components).
        saddle_ratio: Saddle / lower-peak ratio below which maxima split, (0, 1).
        min_peak_fraction: Smallest counted peak relative to the largest, [0, 1].

    Returns:
        Number of lobes (0 for an empty mask).
    """
    dist = _lobe_distance(mask)
    top = float(dist.max(initial=0.0))
    if top == 0.0:
        return 0
    eight = np.ones((3, 3), dtype=bool)
    peaks, n_peaks = ndimage.label(local_maxima(dist, connectivity=2), structure=eight)
    labels = np.arange(1, n_peaks + 1)
    heights = np.asarray(ndimage.maximum(dist, peaks, labels), dtype=np.float64)
    coords = np.asarray(ndimage.maximum_position(dist, peaks, labels), dtype=np.intp)
    order = np.lexsort((labels, -heights))  # highest first, ties by label
    count = 0
    for rank, i in enumerate(order):
        if heights[i] < min_peak_fraction * top:
            break
        higher = order[:rank]
        if higher.size == 0:
            count += 1
            continue
        comp, _ = ndimage.label(dist >= saddle_ratio * heights[i], structure=eight)
        at_peaks = comp[coords[higher, 0], coords[higher, 1]]
        if not np.any(at_peaks == comp[coords[i, 0], coords[i, 1]]):
            count += 1
    return count


def _lobe_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance transform of a padded mask, upsampled when the mask is small."""
    padded = np.pad(mask.astype(bool), 1)
    dist = ndimage.distance_transform_edt(padded)
    top = float(dist.max(initial=0.0))
    if 0.0 < top < LOBE_MIN_RADIUS_PX:
        factor = int(np.ceil(LOBE_MIN_RADIUS_PX / top))
        smooth = cv2.resize(
            padded.astype(np.float32), None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR
        )
        dist = ndimage.distance_transform_edt(smooth > 0.5)
    return np.asarray(dist, dtype=np.float64)


def _group_stats(
    values: np.ndarray, group: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group mean and population std of ``values`` ``(N, C)``: ``(n_groups, C)`` each."""
    counts = np.bincount(group, minlength=n_groups).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sums = np.stack(
            [np.bincount(group, values[:, c], n_groups) for c in range(values.shape[1])], 1
        )
        squares = np.stack(
            [np.bincount(group, values[:, c] ** 2, n_groups) for c in range(values.shape[1])], 1
        )
        mean = sums / counts[:, None]
        std = np.sqrt(np.clip(squares / counts[:, None] - mean**2, 0.0, None))
    return mean, std


def _colour_stats(
    image: np.ndarray, cells: np.ndarray, nuc: np.ndarray, ids: np.ndarray
) -> dict[str, np.ndarray]:
    """RGB and CIE Lab mean / std of the nucleus and cytoplasm pixels of every cell."""
    flat = np.flatnonzero(cells)
    rgb = image.reshape(-1, 3)[flat]
    row = np.searchsorted(ids, cells.reshape(-1)[flat])
    group = 2 * row + (nuc.reshape(-1)[flat] == 0)  # even: nucleus, odd: cytoplasm
    lab = rgb2lab(rgb.reshape(-1, 1, 3)).reshape(-1, 3)
    out: dict[str, np.ndarray] = {}
    for names, values in ((_CHANNELS, rgb.astype(np.float64)), (_LAB, lab)):
        mean, std = _group_stats(values, group, 2 * ids.size)
        for offset, region in enumerate(("nucleus", "cytoplasm")):
            for c, channel in enumerate(names):
                out[f"{region}_mean_{channel}"] = mean[offset::2, c]
                out[f"{region}_std_{channel}"] = std[offset::2, c]
    return out


def _glcm_columns(image: np.ndarray, nuc: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """GLCM texture of every nucleus (NaN for cells without nucleus)."""
    out = {f"glcm_{p}": np.full(ids.size, np.nan) for p in _GLCM_PROPS}
    for label, sl in enumerate(ndimage.find_objects(nuc), start=1):
        if sl is None:
            continue
        row = int(np.searchsorted(ids, label))
        gray = image[sl].astype(np.float64) @ _GRAY_WEIGHTS
        values = nucleus_glcm(gray, nuc[sl] == label)
        for prop, value in zip(_GLCM_PROPS, values, strict=True):
            out[f"glcm_{prop}"][row] = value
    return out


def nucleus_glcm(gray: np.ndarray, mask: np.ndarray) -> tuple[float, ...]:
    """GLCM contrast, homogeneity, energy and correlation inside a mask.

    Args:
        gray: float ``(h, w)`` grayscale, 0-255.
        mask: bool ``(h, w)``: the pixels to describe; pairs with a pixel
            outside it are excluded (reserved level 0, dropped from the matrix).

    Returns:
        The four properties averaged over 0°, 45°, 90° and 135° at 1 pixel
        (angles without a pixel pair are left out); NaN when no pair exists.
    """
    quantised = 1 + np.clip(gray, 0, 255).astype(np.int64) * _GLCM_LEVELS // 256
    quantised = np.where(mask, quantised, 0).astype(np.uint8)
    matrix = graycomatrix(
        quantised, [1], list(_GLCM_ANGLES), levels=_GLCM_LEVELS + 1, symmetric=True
    )[1:, 1:]
    valid = matrix.sum(axis=(0, 1))[0] > 0
    if not valid.any():
        return tuple(float("nan") for _ in _GLCM_PROPS)
    return tuple(float(graycoprops(matrix, p)[0, valid].mean()) for p in _GLCM_PROPS)
