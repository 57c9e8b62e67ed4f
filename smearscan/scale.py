"""Pixel-size estimation from the red blood cells of a field.

RBCs are the best built-in ruler of a smear (7-8 um across, DESIGN.md):
``pixel_size_um = rbc_diameter_um / rbc_diameter_px``. Few fields hold many isolated
RBCs (they touch and overlap, and a camera field may show only a handful), so the cells
are found as the maxima of the distance transform of the cell mask: at the centre of a
round cell the distance to the nearest background is its radius, whether or not the cell
touches others. The steps, all scale-free:

1. Cell mask (:func:`cell_mask`): Lab colour distance to the background colour, above a
   level just over the background (RBC pale centres are close to it).
2. Coarse radius ``r0``: the mode of the candidate radii of the mask with all its holes
   filled. The image is then area-downsampled so that ``r0`` is about
   :data:`TARGET_RADIUS_PX` (speed; the precision is kept by the sub-pixel moments).
3. Open pale centres closed (disc of ``CLOSE_FRACTION * r0``), holes up to a disc of
   ``HOLE_RADIUS_FRACTION * r0`` filled, and the cell-centre candidates taken again:
   local maxima of the distance transform, each the largest value within half its own
   value (:func:`_centre_peaks`), each with its radius ``r``.
4. The mode of the radii (Gaussian kernel density in log radius) is the RBC radius; the
   candidates within :data:`AGREE_TOLERANCE` of it are the RBCs. WBCs (larger),
   platelets and debris (smaller) fall outside. Too few of them, or too small a share of
   all candidates, raise :class:`ScaleEstimationError` rather than give a wrong value.
5. Diameter: the inscribed diameter ``2 r + 1`` underestimates oval and overlapping
   cells, so it is scaled by the field's own ratio of the mean diameter
   (``(major + minor) / 2`` from second moments) of the watershed regions of the whole
   (not border-cut) RBCs to their inscribed diameter (:func:`_shape_ratio`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.filters import threshold_multiotsu
from skimage.segmentation import watershed

from smearscan.errors import ScaleEstimationError
from smearscan.stain import check_rgb

logger = logging.getLogger(__name__)

#: Largest image of the coarse pass, pixels (larger inputs are area-downsampled first).
COARSE_MAX_PIXELS = 600_000
#: RBC radius, px, at which the fine pass works (downsampling only, never upsampling).
TARGET_RADIUS_PX = 16.0
#: Mask level between the background level (0) and the lower multi-Otsu threshold (1).
MASK_LEVEL = 0.15
#: Smallest candidate radius (distance-transform value), px.
MIN_RADIUS_PX = 2.5
#: A candidate centre is the largest distance value within this fraction of its own value.
PEAK_WINDOW_FRACTION = 0.5
#: Ratio between successive radius levels of the peak search.
PEAK_LEVEL_STEP = 1.25
#: Open pale centres closed by a disc of this fraction of ``r0``.
CLOSE_FRACTION = 0.15
#: Holes (pale RBC centres) filled when they fit a disc of this fraction of ``r0``.
HOLE_RADIUS_FRACTION = 0.75
#: Kernel bandwidth of the radius density, in natural-log units (~6 %).
MODE_BANDWIDTH = 0.06
#: Candidates within this relative distance of the mode agree with it.
AGREE_TOLERANCE = 0.2
#: Smallest share of the candidates that must agree with the mode.
MIN_AGREE_SHARE = 0.2
#: Fewest whole RBCs to measure the field's shape ratio; below, the default is used.
MIN_SHAPE_CELLS = 3
#: Mean over inscribed diameter of typical RBCs (measured on txl-pbc train whole cells).
DEFAULT_SHAPE_RATIO = 1.1


@dataclass(frozen=True)
class PixelSizeEstimate:
    """Result of :func:`estimate_pixel_size`.

    Attributes:
        pixel_size_um: Estimated micrometres per pixel.
        method: How it was obtained, e.g. ``"median RBC diameter (n=123)"``.
        rbc_count: Number of RBCs measured (candidates agreeing with the mode).
        median_rbc_diameter_px: Their median diameter, px of the input image.
    """

    pixel_size_um: float
    method: str
    rbc_count: int
    median_rbc_diameter_px: float


@dataclass(frozen=True)
class _Candidates:
    """Cell-centre candidates of a mask.

    Attributes:
        radius: float64 ``(n,)`` distance-transform value at the centre, px.
        mean_diameter: float64 ``(n,)`` mean diameter of the watershed region, px (NaN
            for regions touching the image border).
    """

    radius: np.ndarray
    mean_diameter: np.ndarray


def _downsample(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Area-average ``rgb`` by ``factor`` (>= 1; 1 returns it unchanged)."""
    if factor <= 1.0:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def cell_mask(rgb: np.ndarray) -> np.ndarray:
    """Bool ``(H, W)`` mask of the stained objects (RBCs, WBCs, platelets), holes kept.

    The feature is the Lab colour distance to the background colour (the median colour of
    the lightest multi-Otsu class on L*), so that pale but pink RBCs on a dim background
    are found whatever the stain. Three-class Otsu on that distance separates background,
    RBCs and nuclei (two-class Otsu splits nuclei from the rest on fields with a big WBC);
    the level sits :data:`MASK_LEVEL` of the way from the background to its lower
    threshold, low enough to take in most pale RBC centres.
    """
    smooth = cv2.GaussianBlur(rgb, (3, 3), 0)
    lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB).astype(np.float32)
    light = lab[..., 0]
    if float(np.ptp(light)) < 4.0:
        return np.zeros(light.shape, bool)
    background = np.median(lab[light > threshold_multiotsu(light, classes=3, nbins=128)[1]], 0)
    feat = np.linalg.norm(lab - background, axis=-1)
    t_low = float(threshold_multiotsu(feat, classes=3, nbins=128)[0])
    level = float(np.median(feat[feat <= t_low]))
    fg = feat > level + MASK_LEVEL * (t_low - level)
    return cv2.morphologyEx(fg.view(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0


def _fill_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Fill the holes of a bool mask of at most ``max_area`` px not touching the border."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        (~mask).view(np.uint8), connectivity=4, ltype=cv2.CV_32S
    )
    h, w = mask.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    inner = (x > 0) & (y > 0)
    inner &= (x + stats[:, cv2.CC_STAT_WIDTH] < w) & (y + stats[:, cv2.CC_STAT_HEIGHT] < h)
    small = inner & (stats[:, cv2.CC_STAT_AREA] <= max_area)
    small[0] = False
    return mask | small[labels]


def _distance(mask: np.ndarray) -> np.ndarray:
    """float32 ``(H, W)`` Euclidean distance to the nearest background pixel, px.

    Outside the image counts as foreground (OpenCV), so a cell cut by the border keeps its
    radius as long as its centre is inside.
    """
    return cv2.distanceTransform(mask.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _centre_peaks(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale-adaptive maxima of a distance transform.

    A pixel of value ``r`` is a peak when no value within ``PEAK_WINDOW_FRACTION * r`` px
    (square window) is larger; the window grows with ``r`` by levels of
    :data:`PEAK_LEVEL_STEP`, so small and large cells are found alike.

    Returns:
        int32 ``(H, W)`` peak labels (plateaus are one peak; 0 = none) and float64
        ``(n + 1,)`` radius of each label (index 0 unused).
    """
    peak = np.zeros(dist.shape, bool)
    top = float(dist.max())
    lo = MIN_RADIUS_PX
    while lo <= top:
        hi = lo * PEAK_LEVEL_STEP
        half = max(1, round(PEAK_WINDOW_FRACTION * lo))
        level = (dist >= lo) & (dist < hi)
        if level.any():
            kernel = np.ones((2 * half + 1, 2 * half + 1), np.uint8)
            peak |= level & (dist >= cv2.dilate(dist, kernel))
        lo = hi
    n, labels = cv2.connectedComponents(peak.view(np.uint8), connectivity=8)
    radius = np.zeros(n, np.float64)
    np.maximum.at(radius, labels[peak], dist[peak].astype(np.float64))
    return labels, radius


def _mean_diameters(labels: np.ndarray, n: int) -> np.ndarray:
    """Mean diameter ``(major + minor) / 2`` of each labelled region, from its moments.

    Args:
        labels: int32 ``(H, W)`` region labels ``1..n-1`` (0 = none).
        n: Number of labels including 0.

    Returns:
        float64 ``(n,)`` diameters, px (``major = 4 sqrt(lambda_1)`` of the covariance,
        exact for a filled ellipse); NaN for empty regions and those touching the border.
    """
    inside = labels > 0
    lab = labels[inside]
    yy, xx = np.nonzero(inside)
    area = np.bincount(lab, minlength=n).astype(np.float64)
    safe = np.maximum(area, 1.0)
    my = np.bincount(lab, yy, n) / safe
    mx = np.bincount(lab, xx, n) / safe
    cyy = np.bincount(lab, yy.astype(np.float64) ** 2, n) / safe - my**2 + 1.0 / 12.0
    cxx = np.bincount(lab, xx.astype(np.float64) ** 2, n) / safe - mx**2 + 1.0 / 12.0
    cxy = np.bincount(lab, yy.astype(np.float64) * xx, n) / safe - mx * my
    half_trace = 0.5 * (cyy + cxx)
    root = np.sqrt(np.maximum((0.5 * (cyy - cxx)) ** 2 + cxy**2, 0.0))
    major = 4.0 * np.sqrt(half_trace + root)
    minor = 4.0 * np.sqrt(np.maximum(half_trace - root, 0.0))
    diameter = 0.5 * (major + minor)
    border = np.zeros(n, bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        border[edge] = True
    diameter[border | (area == 0)] = np.nan
    return diameter


def _candidates(mask: np.ndarray, r0: float | None) -> _Candidates:
    """Cell-centre candidates of a mask, at typical radius ``r0`` (None: coarse pass).

    The coarse pass fills every hole and measures no regions; the fine pass closes open
    pale centres and fills holes up to the size of a pale centre, then measures the
    watershed regions of the distance transform around the candidates.
    """
    if r0 is None:
        filled = _fill_holes(mask, float(mask.size))
    else:
        close_r = round(CLOSE_FRACTION * r0)
        if close_r > 0:
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * close_r + 1,) * 2)
            mask = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_CLOSE, disc) > 0
        filled = _fill_holes(mask, np.pi * (HOLE_RADIUS_FRACTION * r0) ** 2)
    dist = _distance(filled)
    peaks, radius = _centre_peaks(dist)
    if r0 is None or radius.size <= 1:
        return _Candidates(radius[1:], np.full(radius.size - 1, np.nan))
    regions = watershed(-dist, peaks, mask=filled)
    return _Candidates(radius[1:], _mean_diameters(regions, radius.size)[1:])


def _mode(values: np.ndarray) -> float:
    """Mode of positive values: maximum of a Gaussian kernel density in log value."""
    logs = np.log(values)
    grid = np.arange(logs.min() - 0.2, logs.max() + 0.2, MODE_BANDWIDTH / 4)
    density = np.exp(-0.5 * ((grid[:, None] - logs[None, :]) / MODE_BANDWIDTH) ** 2).sum(1)
    return float(np.exp(grid[int(np.argmax(density))]))


def _shape_ratio(cands: _Candidates, agree: np.ndarray) -> float:
    """Median ratio of mean to inscribed diameter over the whole agreeing RBCs."""
    ratio = cands.mean_diameter[agree] / (2.0 * cands.radius[agree] + 1.0)
    ratio = ratio[np.isfinite(ratio)]
    return float(np.median(ratio)) if ratio.size >= MIN_SHAPE_CELLS else DEFAULT_SHAPE_RATIO


def _fine_image(rgb: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """The image of the fine pass, its downsampling factor and its coarse RBC radius, px.

    Returns:
        ``None`` when the coarse pass finds no candidate at all.
    """
    factor = max(1.0, float(np.sqrt(rgb.shape[0] * rgb.shape[1] / COARSE_MAX_PIXELS)))
    radius = _candidates(cell_mask(_downsample(rgb, factor)), None).radius
    if radius.size == 0:
        return None
    r0 = _mode(radius) * factor  # in input px
    fine = max(1.0, r0 / TARGET_RADIUS_PX)
    return _downsample(rgb, fine), fine, r0 / fine


def rbc_diameters_px(rgb: np.ndarray) -> np.ndarray:
    """Diameters of the RBCs of an image (the candidates agreeing with the radius mode).

    Args:
        rgb: RGB uint8 ``(H, W, 3)`` at any scale.

    Returns:
        float64 ``(n,)`` diameters in pixels of ``rgb``; empty when the candidates do not
        agree on a size (fewer than :data:`MIN_AGREE_SHARE` of them near the mode).
    """
    check_rgb(rgb)
    prepared = _fine_image(rgb)
    if prepared is None:
        return np.zeros(0, np.float64)
    image, factor, r0 = prepared
    cands = _candidates(cell_mask(image), r0)
    if cands.radius.size == 0:
        return np.zeros(0, np.float64)
    mode = _mode(cands.radius)
    agree = np.abs(cands.radius / mode - 1.0) <= AGREE_TOLERANCE
    ratio = _shape_ratio(cands, agree)
    logger.debug(
        "scale: factor %.2f, r0 %.1f px, %d candidates, mode %.1f px, %d agree, ratio %.3f",
        factor, r0, cands.radius.size, mode, int(agree.sum()), ratio,
    )
    if agree.sum() < MIN_AGREE_SHARE * cands.radius.size:
        return np.zeros(0, np.float64)
    return ratio * (2.0 * cands.radius[agree] + 1.0) * factor


def estimate_pixel_size(
    rgb: np.ndarray, *, rbc_diameter_um: float = 7.5, min_rbcs: int = 5
) -> PixelSizeEstimate:
    """Estimate the pixel size of a smear field from its median RBC diameter.

    Args:
        rgb: RGB uint8 ``(H, W, 3)`` at the source resolution (RBCs ~8-150 px across);
            at most ~4096 x 4096 px.
        rbc_diameter_um: Assumed mean RBC diameter, micrometres.
        min_rbcs: Fewest RBCs needed for an estimate.

    Returns:
        The :class:`PixelSizeEstimate`.

    Raises:
        ScaleEstimationError: When fewer than ``min_rbcs`` RBCs of a consistent size are
            found.
    """
    diameters = rbc_diameters_px(rgb)
    if diameters.size < min_rbcs:
        raise ScaleEstimationError(
            f"found {diameters.size} red cells of a consistent size, need at least "
            f"{min_rbcs} to estimate the pixel size; pass the pixel size explicitly "
            "(--pixel-size)"
        )
    median_px = float(np.median(diameters))
    estimate = PixelSizeEstimate(
        pixel_size_um=rbc_diameter_um / median_px,
        method=f"median RBC diameter (n={diameters.size})",
        rbc_count=int(diameters.size),
        median_rbc_diameter_px=median_px,
    )
    logger.debug("pixel size estimate: %s", estimate)
    return estimate
