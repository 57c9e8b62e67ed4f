"""Pixel-size estimation from the red blood cells of a field.

RBCs are the best built-in ruler of a smear (7-8 um across, DESIGN.md):
``pixel_size_um = rbc_diameter_um / rbc_diameter_px``. Few fields hold many isolated
RBCs (they touch and overlap, and a camera field may show only a handful), so the cells
are found as the maxima of the distance transform of the cell mask: at the centre of a
round cell the distance to the nearest background is its radius, whether or not the cell
touches others. The steps, all scale-free:

1. Cell mask (:func:`cell_mask`): Lab colour distance to the background colour above
   :data:`MASK_LEVEL` of the RBC contrast (RBCs pink, WBCs purple and debris all count).
2. Coarse radius: the mode of the candidate radii (step 3) of the mask with all its
   holes filled, weighted by radius, on a copy of at most :data:`COARSE_MAX_PIXELS`.
3. Fine pass at radius ``r0``: a copy area-downsampled so that ``r0`` is about
   :data:`TARGET_RADIUS_PX` (speed; never upsampled), holes up to a disc of
   ``HOLE_RADIUS_FRACTION * r0`` (pale centres) filled, and the cell-centre candidates:
   maxima of the distance transform, each the largest value within half of
   ``max(r, r0)`` (:func:`_centre_peaks`), each with its radius ``r``. Repeated from its
   own mode until that agrees with ``r0`` (a clump or a big WBC can mislead step 2).
4. The mode of the radii (Gaussian kernel density in log radius) is the RBC radius; the
   candidates within :data:`AGREE_TOLERANCE` of it are the RBCs. WBCs (larger),
   platelets and debris (smaller) fall outside. Too few of them, or too small a share of
   all candidates, raise :class:`ScaleEstimationError` rather than give a wrong value.
5. Diameter: the inscribed diameter ``2 r + 1`` underestimates oval cells, so it is
   scaled by the ratio of the mean diameter ``(major + minor) / 2`` (second moments) to
   the inscribed diameter of the field's isolated whole RBCs, shrunk towards a typical
   ratio when there are few of them (:func:`_shape_ratio`).

Validated against the RBC boxes of txl-pbc by ``benchmarks/scale_accuracy.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.filters import threshold_multiotsu

from smearscan.errors import ScaleEstimationError
from smearscan.stain import check_rgb

logger = logging.getLogger(__name__)

#: Largest image of the coarse pass, pixels (larger inputs are area-downsampled first).
COARSE_MAX_PIXELS = 600_000
#: RBC radius, px, at which the fine pass works (downsampling only, never upsampling).
TARGET_RADIUS_PX = 16.0
#: Largest image of the fine pass, pixels, as long as the RBC radius stays at least
#: :data:`MIN_TARGET_RADIUS_PX` (speed).
FINE_MAX_PIXELS = 1_500_000
MIN_TARGET_RADIUS_PX = 10.0
#: Largest pixel sample of the mask statistics (stride-subsampled).
STATS_MAX_PIXELS = 300_000
#: Smallest Lab distance (8-bit units) between the RBC and background levels of a field
#: with cells (>= 16.9 on every txl-pbc val field; noise or a blank field gives < 3).
MIN_CELL_CONTRAST = 6.0
#: Mask level between the background (0) and the RBC level (1) of the colour distance.
MASK_LEVEL = 0.2
#: Smallest candidate radius (distance-transform value), px.
MIN_RADIUS_PX = 2.5
#: A candidate centre is the largest distance value within this fraction of its own value.
PEAK_WINDOW_FRACTION = 0.5
#: Fine-pass candidates smaller than this fraction of ``r0`` are ignored (specks, ridges).
MIN_PEAK_FRACTION = 0.35
#: Fine-pass candidates larger than this multiple of ``r0`` (WBCs) are not searched.
MAX_PEAK_FRACTION = 2.5
#: A candidate centre lies at least this fraction of its radius from the image border.
BORDER_FRACTION = 0.1
#: Ratio between successive radius levels of the peak search.
PEAK_LEVEL_STEP = 1.25
#: Holes (pale RBC centres) filled when they fit a disc of this fraction of ``r0``.
HOLE_RADIUS_FRACTION = 0.75
#: Kernel bandwidth of the radius density, in natural-log units (~6 %).
MODE_BANDWIDTH = 0.06
#: Candidates within this relative distance of the mode agree with it.
AGREE_TOLERANCE = 0.25
#: Fine passes at most, and the relative change of the radius that ends them.
MAX_FINE_PASSES = 3
CONVERGED_TOLERANCE = 0.15
#: Smallest share of the candidates that must agree with the mode.
MIN_AGREE_SHARE = 0.2
#: Mean over inscribed diameter of isolated RBCs: median over the 1356 isolated whole RBCs
#: found in txl-pbc train (per source 1.04-1.15: BCD cells are the most oval).
DEFAULT_SHAPE_RATIO = 1.06
#: Larger ratios are taken for two overlapping cells with one centre, not one cell.
MAX_SHAPE_RATIO = 1.3
#: Weight, in cells, of :data:`DEFAULT_SHAPE_RATIO` against a field's own measurements.
SHAPE_PRIOR_CELLS = 2.0


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
        mean_diameter: float64 ``(n,)`` mean diameter, px, of the candidate's connected
            component when it is alone in it (an isolated cell); NaN otherwise and for
            components touching the image border.
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
    the level sits :data:`MASK_LEVEL` of the way from the background level (median of
    the lowest class) to the RBC level (median of the middle class): low enough to keep
    most pale RBC centres, high enough not to widen sharp edges. A 3x3 median filter
    (not a Gaussian, which would widen edges too) removes JPEG noise.

    Args:
        rgb: RGB uint8 ``(H, W, 3)``.

    Returns:
        Bool ``(H, W)`` mask, opened by a 3x3 square.
    """
    smooth = cv2.medianBlur(rgb, 3)
    lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB).astype(np.float32)
    light = lab[..., 0]
    if float(np.ptp(light)) < 4.0:
        return np.zeros(light.shape, bool)
    step = max(1, int(np.sqrt(light.size / STATS_MAX_PIXELS)))
    sample = lab[::step, ::step].reshape(-1, 3)
    t_light = threshold_multiotsu(sample[:, 0], classes=3, nbins=128)[1]
    background = np.median(sample[sample[:, 0] > t_light], axis=0)
    feat = np.sqrt(((lab - background) ** 2).sum(axis=-1))
    feat_sample = feat[::step, ::step].ravel()
    t_low, t_high = (float(t) for t in threshold_multiotsu(feat_sample, classes=3, nbins=128))
    level = float(np.median(feat_sample[feat_sample <= t_low]))
    middle = feat_sample[(feat_sample > t_low) & (feat_sample <= t_high)]
    cells = float(np.median(middle)) if middle.size else t_low
    if cells - level < MIN_CELL_CONTRAST:
        logger.debug("scale: cells only %.1f Lab units from the background", cells - level)
        return np.zeros(light.shape, bool)
    fg = feat > level + MASK_LEVEL * (cells - level)
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


def _centre_peaks(
    dist: np.ndarray, min_window: float, max_radius: float = np.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Scale-adaptive maxima of a distance transform.

    A pixel of value ``r`` is a peak when no value within ``PEAK_WINDOW_FRACTION *
    max(r, min_window)`` px (square window) is larger; the window grows with ``r`` by
    levels of :data:`PEAK_LEVEL_STEP`, so small and large cells are found alike. Values
    above ``max_radius`` are not searched (speed).

    Returns:
        int32 ``(H, W)`` peak labels (plateaus are one peak; 0 = none) and float64
        ``(n + 1,)`` radius of each label (index 0 unused).
    """
    peak = np.zeros(dist.shape, bool)
    top = min(float(dist.max()), max_radius)
    # Radius levels [lo, lo * step) grouped by window half-size (one dilation per size).
    windows: dict[int, tuple[float, float]] = {}
    lo = MIN_RADIUS_PX
    while lo <= top:
        half = max(1, round(PEAK_WINDOW_FRACTION * max(lo, min_window)))
        windows[half] = (windows.get(half, (lo, lo))[0], lo * PEAK_LEVEL_STEP)
        lo *= PEAK_LEVEL_STEP
    for half, (lo, hi) in windows.items():
        level = (dist >= lo) & (dist < hi)
        if level.any():
            kernel = np.ones((2 * half + 1, 2 * half + 1), np.uint8)
            peak |= level & (dist >= cv2.dilate(dist, kernel))
    # Outside the image counts as foreground, so a mask band along the border peaks on the
    # border itself; a cut cell keeps its true radius at its centre while that is inside.
    h, w = dist.shape
    rows, cols = np.ogrid[:h, :w]
    to_edge = np.minimum(np.minimum(rows, h - 1 - rows), np.minimum(cols, w - 1 - cols))
    peak &= to_edge >= BORDER_FRACTION * dist
    n, labels = cv2.connectedComponents(peak.view(np.uint8), connectivity=8)
    radius = np.zeros(n, np.float64)
    np.maximum.at(radius, labels[peak].astype(np.intp), dist[peak].astype(np.float64))
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

    The coarse pass fills every hole and measures no shapes; the fine pass fills the
    holes up to the size of a pale centre, and measures the mean diameter of the
    candidates that are alone in their connected component (isolated cells; touching
    cells have no reliable outline of their own).
    """
    if r0 is None:
        filled = _fill_holes(mask, float(mask.size))
    else:
        filled = _fill_holes(mask, np.pi * (HOLE_RADIUS_FRACTION * r0) ** 2)
    dist = _distance(filled)
    if r0 is None:
        peaks, radius = _centre_peaks(dist, 0.0)
    else:
        peaks, radius = _centre_peaks(dist, r0, MAX_PEAK_FRACTION * r0)
    diameter = np.full(radius.size - 1, np.nan)
    if r0 is None or radius.size <= 1:
        return _Candidates(radius[1:], diameter)
    n_comps, comps = cv2.connectedComponents(filled.view(np.uint8), connectivity=8)
    rows, cols = np.nonzero(peaks)
    _, first = np.unique(peaks[rows, cols], return_index=True)
    comp_of = comps[rows[first], cols[first]]  # component of each peak label 1..n
    alone = np.bincount(comp_of, minlength=n_comps)[comp_of] == 1
    diameter[alone] = _mean_diameters(comps, n_comps)[comp_of[alone]]
    return _Candidates(radius[1:], diameter)


def _mode(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mode of positive values: maximum of a Gaussian kernel density in log value."""
    logs = np.log(values)
    grid = np.arange(logs.min() - 0.2, logs.max() + 0.2, MODE_BANDWIDTH / 4)
    kernel = np.exp(-0.5 * ((grid[:, None] - logs[None, :]) / MODE_BANDWIDTH) ** 2)
    density = kernel @ (np.ones_like(values) if weights is None else weights)
    return float(np.exp(grid[int(np.argmax(density))]))


def _shape_ratio(cands: _Candidates, agree: np.ndarray) -> float:
    """Ratio of mean to inscribed diameter of the field's RBCs.

    The median over the isolated agreeing RBCs, shrunk towards
    :data:`DEFAULT_SHAPE_RATIO` with the weight of :data:`SHAPE_PRIOR_CELLS` cells (few
    fields have many isolated whole cells).
    """
    ratio = cands.mean_diameter[agree] / (2.0 * cands.radius[agree] + 1.0)
    ratio = ratio[np.isfinite(ratio) & (ratio <= MAX_SHAPE_RATIO)]
    if ratio.size == 0:
        return DEFAULT_SHAPE_RATIO
    n = ratio.size
    return float(
        (n * np.median(ratio) + SHAPE_PRIOR_CELLS * DEFAULT_SHAPE_RATIO) / (n + SHAPE_PRIOR_CELLS)
    )


def _coarse_radius(rgb: np.ndarray) -> float:
    """Coarse RBC radius of an image, px of ``rgb`` (NaN when nothing is found).

    The mode of the candidate radii of the cell mask with every hole filled, weighted by
    the disc area (specks and ridge maxima are many but cover little), on a copy of at
    most :data:`COARSE_MAX_PIXELS`.
    """
    factor = max(1.0, float(np.sqrt(rgb.shape[0] * rgb.shape[1] / COARSE_MAX_PIXELS)))
    radius = _candidates(cell_mask(_downsample(rgb, factor)), None).radius
    if radius.size == 0:
        return float("nan")
    return _mode(radius, radius) * factor


def _fine_pass(rgb: np.ndarray, r0: float) -> tuple[_Candidates, float, float]:
    """Candidates at typical radius ``r0`` (px of ``rgb``) on a copy downsampled so that
    ``r0`` is about :data:`TARGET_RADIUS_PX`, or further (down to
    :data:`MIN_TARGET_RADIUS_PX`) to keep the copy within :data:`FINE_MAX_PIXELS`.

    Returns:
        The candidates (radii in px of the copy, those below ``MIN_PEAK_FRACTION * r0``
        dropped), the downsampling factor and the mode of their radii (NaN if none).
    """
    factor = max(1.0, r0 / TARGET_RADIUS_PX)
    budget = float(np.sqrt(rgb.shape[0] * rgb.shape[1] / FINE_MAX_PIXELS))
    factor = max(factor, min(budget, r0 / MIN_TARGET_RADIUS_PX))
    r_work = r0 / factor
    cands = _candidates(cell_mask(_downsample(rgb, factor)), r_work)
    keep = cands.radius >= MIN_PEAK_FRACTION * r_work
    cands = _Candidates(cands.radius[keep], cands.mean_diameter[keep])
    mode = _mode(cands.radius) if cands.radius.size else float("nan")
    return cands, factor, mode


def rbc_diameters_px(rgb: np.ndarray) -> np.ndarray:
    """Diameters of the RBCs of an image (the candidates agreeing with the radius mode).

    The fine pass is repeated from its own mode until the mode agrees with the radius it
    was run at (a fixed point; at most :data:`MAX_FINE_PASSES`), so that a coarse radius
    thrown off by clumps or a large WBC is corrected.

    Args:
        rgb: RGB uint8 ``(H, W, 3)`` at any scale.

    Returns:
        float64 ``(n,)`` diameters in pixels of ``rgb``; empty when the candidates do not
        agree on a size (fewer than :data:`MIN_AGREE_SHARE` of them near the mode).
    """
    check_rgb(rgb)
    r0 = _coarse_radius(rgb)
    empty = np.zeros(0, np.float64)
    for _ in range(MAX_FINE_PASSES):
        if not np.isfinite(r0):
            return empty
        cands, factor, mode = _fine_pass(rgb, r0)
        converged = abs(mode * factor / r0 - 1.0) <= CONVERGED_TOLERANCE
        logger.debug("scale: r0 %.1f px, factor %.2f, mode %.1f px", r0, factor, mode)
        if converged:
            break
        r0 = mode * factor
    if not np.isfinite(mode):
        return empty
    agree = np.abs(cands.radius / mode - 1.0) <= AGREE_TOLERANCE
    ratio = _shape_ratio(cands, agree)
    logger.debug(
        "scale: %d candidates, %d agree, shape ratio %.3f", cands.radius.size, agree.sum(), ratio
    )
    if agree.sum() < MIN_AGREE_SHARE * cands.radius.size:
        return empty
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
