"""Colour features of Romanowsky-stained smears and per-slide stain calibration.

All features are computed in optical density (OD) space, ``OD_c = -ln((I_c + 1) / 256)``
per RGB channel ``c``, which turns the stain amounts into additive quantities:

* ``darkness`` = ``OD_R + OD_G + OD_B``: how much stain a pixel holds (background ~0.3-0.5,
  RBCs and WBC cytoplasm ~0.6-2, nuclei ~2-5).
* ``nucleus_score`` = ``OD_G - OD_B + 0.5 * OD_R``: the blue-green difference in OD units,
  boosted by the red absorbance of the azure/methylene-blue dyes. High for purple/dark
  blue nuclei and platelets, low for the pink/salmon eosin of RBCs and for background.
* ``eosin`` = ``OD_G - OD_R``: green minus red absorbance; higher for the pink/salmon
  RBCs than for the pale blue-grey WBC cytoplasm.
* ``blue`` = ``OD_B - OD_G``: blue minus green absorbance. Near 0 for the salmon RBCs
  (they absorb green and blue alike), clearly negative for the lilac, blue and
  purple WBC cytoplasm and nuclei, positive for the orange eosinophil granules.

``eosin`` and ``blue`` are differences of optical densities, so uneven
illumination (vignetting multiplies the intensity, i.e. adds the same OD to
every channel) cancels out of them: together they place a pixel's colour on
the chroma plane, independent of its brightness. Relative to the background
colour they separate pale cytoplasm from background, and cytoplasm from RBCs,
where ``darkness`` alone cannot.

Colours vary a lot between labs, so the thresholds on these features are fixed per slide
by :func:`calibrate_stain` on a sample of the slide (Otsu on the sample plus guards for
samples without any WBC) and stored in a :class:`StainCalibration`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.filters import threshold_otsu

from smearscan.errors import ProcessingError

logger = logging.getLogger(__name__)

#: Optical densities are clipped to this value (a saturated black pixel would be ~5.5).
OD_MAX = 4.0
#: Largest number of sample pixels used for the calibration statistics (stride-subsampled).
MAX_CALIBRATION_PIXELS = 1_000_000
#: Darkness above the background level that makes a pixel foreground (RBC, WBC, platelet).
FG_MARGIN_OD = 0.3
#: Darkness above the background level that WBC cytoplasm must reach (pale cytoplasm).
CYTO_MARGIN_OD = 0.12
#: Smallest gap between an Otsu nucleus threshold and the background score for the upper
#: Otsu class to count as real nuclei (samples without WBC give a much smaller gap).
MIN_NUCLEUS_GAP = 0.3
#: Largest share of the foreground that the whole-sample Otsu split may call nucleus.
#: Measured, TXL-PBC val WBC F1 with one pixel size per source (cells_txlpbc.py) and
#: wbc-seg jiangxi nucleus/cell Dice (classical_dice.py): 0.7: 0.929, 0.909/0.802;
#: 0.6: 0.947, 0.898/0.781; 0.5: 0.952, 0.887/0.769. Without the limit, F1 with the pixel
#: size estimated per image was 0.806 (Raabin's purple RBCs taken for nuclei); with 0.5,
#: 0.870. Full fields matter more than 120 px single-cell crops.
MAX_NUCLEUS_FG_SHARE = 0.5
#: Fallback nucleus threshold above the background score for samples without a WBC.
FALLBACK_NUCLEUS_GAP = 0.6
#: Fallback nucleus threshold above the 99.5th percentile of the foreground score.
FALLBACK_FG_TAIL_MARGIN = 0.1
#: Share of the lightest sample pixels whose colour (mode) is the background colour.
BACKGROUND_LIGHTEST_SHARE = 0.10
#: RBC colour sample: foreground pixels at least this far (um) from any nucleus stain...
RBC_SAMPLE_CLEARANCE_UM = 6.0
#: ...and at least this share of the sample; otherwise the default RBC colour is used.
RBC_SAMPLE_MIN_SHARE = 0.01
#: Default RBC colour relative to the background (eosin, blue): salmon-pink.
DEFAULT_RBC_CHROMA = (0.25, -0.06)
#: Smallest chroma (OD) an RBC colour sample must have to be trusted.
MIN_RBC_CHROMA = 0.06


@dataclass(frozen=True)
class StainFeatures:
    """Per-pixel colour features of one RGB image.

    Attributes:
        darkness: float32 ``(H, W)``, summed optical density (unitless OD).
        nucleus_score: float32 ``(H, W)``, ``OD_G - OD_B + 0.5 * OD_R``.
        eosin: float32 ``(H, W)``, ``OD_G - OD_R``.
        blue: float32 ``(H, W)``, ``OD_B - OD_G``.
    """

    darkness: np.ndarray
    nucleus_score: np.ndarray
    eosin: np.ndarray
    blue: np.ndarray


@dataclass(frozen=True)
class StainCalibration:
    """Slide-level stain statistics and thresholds (all in OD units).

    Attributes:
        background_darkness: Median darkness of the background.
        background_score: Median nucleus score of the background.
        fg_threshold: Darkness above which a pixel is foreground (a cell or platelet).
        cyto_threshold: Darkness above which a pixel next to a nucleus is WBC cytoplasm.
        nucleus_threshold: Nucleus score above which a pixel is nucleus/platelet stain.
        source: How the values were obtained (``default``, ``otsu``, ``no-wbc fallback``...).
        background_eosin: ``eosin`` of the background (its tint): the mode over the
            lightest pixels.
        background_blue: ``blue`` of the background.
        rbc_eosin: Typical RBC ``eosin`` relative to the background.
        rbc_blue: Typical RBC ``blue`` relative to the background.
        rbc_source: ``sample`` (measured on RBCs away from nuclei) or ``default``.
    """

    background_darkness: float
    background_score: float
    fg_threshold: float
    cyto_threshold: float
    nucleus_threshold: float
    source: str
    background_eosin: float = 0.0
    background_blue: float = 0.0
    rbc_eosin: float = DEFAULT_RBC_CHROMA[0]
    rbc_blue: float = DEFAULT_RBC_CHROMA[1]
    rbc_source: str = "default"


#: Built-in statistics, typical of May-Grunwald-Giemsa / Wright smears (used uncalibrated).
DEFAULT_CALIBRATION = StainCalibration(
    background_darkness=0.35,
    background_score=0.05,
    fg_threshold=0.35 + FG_MARGIN_OD,
    cyto_threshold=0.35 + CYTO_MARGIN_OD,
    nucleus_threshold=0.7,
    source="default",
)


def check_rgb(rgb: np.ndarray, what: str = "image") -> None:
    """Check that ``rgb`` is an RGB uint8 ``(H, W, 3)`` array.

    Raises:
        ProcessingError: When the shape or dtype is wrong.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ProcessingError(
            "segment",
            f"{what} must be an RGB uint8 array (H, W, 3); got {rgb.dtype} {rgb.shape}",
        )


def stain_features(rgb: np.ndarray) -> StainFeatures:
    """Compute the colour features of an RGB image.

    The image is first smoothed with a 3x3 Gaussian (support radius 1 px).

    Args:
        rgb: RGB uint8 array ``(H, W, 3)``.

    Returns:
        The :class:`StainFeatures` of the image, each float32 ``(H, W)``.
    """
    check_rgb(rgb)
    smooth = cv2.GaussianBlur(rgb, (3, 3), 0, borderType=cv2.BORDER_REFLECT_101)
    # -ln((I + 1) / 256) through a 256-entry lookup table (fast and exact for uint8 input).
    lut = np.minimum(-np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0), OD_MAX)
    od = lut.astype(np.float32)[smooth]
    od_r, od_g, od_b = od[..., 0], od[..., 1], od[..., 2]
    return StainFeatures(
        darkness=od_r + od_g + od_b,
        nucleus_score=od_g - od_b + 0.5 * od_r,
        eosin=od_g - od_r,
        blue=od_b - od_g,
    )


def _subsample_step(rgb: np.ndarray) -> int:
    """Stride that leaves at most ~MAX_CALIBRATION_PIXELS of ``rgb``."""
    return max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / MAX_CALIBRATION_PIXELS))))


def _rbc_chroma(
    feats: StainFeatures,
    nucleus_threshold: float,
    fg_threshold: float,
    background: tuple[float, float],
    clearance_px: int,
) -> tuple[float, float, str]:
    """Typical RBC colour (eosin, blue) relative to the background, and its source.

    Measured as the median colour of foreground pixels (darker than ``fg_threshold``)
    that lie at least ``clearance_px`` from any nucleus-stained pixel, so WBC cytoplasm
    is left out. Falls back to :data:`DEFAULT_RBC_CHROMA` on samples with too few such
    pixels (single-cell crops) or with a colourless result.
    """
    stain = (feats.nucleus_score > nucleus_threshold).astype(np.uint8)
    size = 2 * clearance_px + 1
    near = cv2.dilate(stain, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) > 0
    chosen = (feats.darkness > fg_threshold) & ~near
    if chosen.sum() >= RBC_SAMPLE_MIN_SHARE * chosen.size:
        eosin = float(np.median(feats.eosin[chosen])) - background[0]
        blue = float(np.median(feats.blue[chosen])) - background[1]
        if np.hypot(eosin, blue) >= MIN_RBC_CHROMA and eosin > 0:
            return eosin, blue, "sample"
    return DEFAULT_RBC_CHROMA[0], DEFAULT_RBC_CHROMA[1], "default"


def _nucleus_threshold(
    score: np.ndarray, fg_score: np.ndarray, bg_score: float
) -> tuple[float, str]:
    """Nucleus-score threshold of a slide and how it was found.

    1. Otsu on the whole sample, when its upper class is clearly above the
       background (nuclei are a large share of the sample, e.g. a WBC crop)
       and does not take most of the foreground (then it split background
       from purple-stained RBCs).
    2. Otsu on the foreground only, when its upper class is clearly above both
       the rest of the foreground (RBCs) and the background: a field where
       nuclei are ~1 % of the pixels and strongly stained RBCs would
       otherwise take the whole-sample split.
    3. Otherwise the sample holds no WBC: a threshold above the background and
       the 99.5th percentile of the foreground, so no RBC is taken for a nucleus.
    """
    t_all = float(threshold_otsu(score))
    over = float(np.mean(fg_score > t_all)) if fg_score.size else 0.0
    if t_all - bg_score >= MIN_NUCLEUS_GAP and over <= MAX_NUCLEUS_FG_SHARE:
        return t_all, "otsu"
    if fg_score.size >= 64 and float(np.ptp(fg_score)) > 0:
        t_fg = float(threshold_otsu(fg_score))
        rest = float(np.median(fg_score[fg_score < t_fg]))
        if t_fg - rest >= MIN_NUCLEUS_GAP and t_fg - bg_score >= MIN_NUCLEUS_GAP:
            return t_fg, "otsu on foreground"
    tail = float(np.percentile(fg_score, 99.5)) if fg_score.size else bg_score
    return (
        max(bg_score + FALLBACK_NUCLEUS_GAP, tail + FALLBACK_FG_TAIL_MARGIN),
        "otsu, no-wbc fallback",
    )


def _mode(values: np.ndarray, bin_width: float = 0.005) -> float:
    """Most frequent value (histogram peak, smoothed over 3 bins) of a 1-D array.

    The background colour is the mode of the lighter Otsu class rather than its
    median: on fields with pale RBC centres or pale cytoplasm that class also holds
    some stained pixels, which shift a median but not the peak.
    """
    if values.size == 0:
        return 0.0
    lo, hi = np.percentile(values, [1, 99])
    if hi - lo < bin_width:
        return float(np.median(values))
    counts, edges = np.histogram(values, bins=int(np.ceil((hi - lo) / bin_width)), range=(lo, hi))
    smooth = np.convolve(counts, np.ones(3), mode="same")
    peak = int(np.argmax(smooth))
    return float((edges[peak] + edges[peak + 1]) / 2)


def calibrate_stain(sample: np.ndarray, pixel_size_um: float = 0.25) -> StainCalibration:
    """Fix the slide-level thresholds from a sample of the slide.

    Background: Otsu on darkness splits the sample; the median darkness/score of the
    lower class is the background level and the foreground thresholds are fixed margins
    above it. Nuclei: see :func:`_nucleus_threshold` (whole-sample Otsu, else
    foreground Otsu, else a no-WBC fallback that takes no RBC for a nucleus).

    Args:
        sample: RGB uint8 ``(H, W, 3)`` sample of the slide at the segmenter's input scale.
        pixel_size_um: Pixel size of ``sample`` (sets the RBC sample's clearance).

    Returns:
        The slide's :class:`StainCalibration`.
    """
    check_rgb(sample, "calibration sample")
    step = _subsample_step(sample)
    feats = stain_features(np.ascontiguousarray(sample[::step, ::step]))
    dark = feats.darkness.ravel()
    score = feats.nucleus_score.ravel()
    if dark.size < 64 or float(np.ptp(dark)) < 0.05:
        logger.warning("calibration sample is (nearly) uniform; using default stain statistics")
        return DEFAULT_CALIBRATION
    t_dark = float(threshold_otsu(dark))
    bg = dark < t_dark
    bg_dark = float(np.median(dark[bg]))
    bg_score = float(np.median(score[bg]))
    fg_thr = bg_dark + FG_MARGIN_OD
    nuc_thr, source = _nucleus_threshold(score, score[dark > fg_thr], bg_score)
    lightest = dark <= np.quantile(dark, BACKGROUND_LIGHTEST_SHARE)
    background = (_mode(feats.eosin.ravel()[lightest]), _mode(feats.blue.ravel()[lightest]))
    clearance = max(1, round(RBC_SAMPLE_CLEARANCE_UM / (pixel_size_um * step)))
    rbc_eosin, rbc_blue, rbc_source = _rbc_chroma(feats, nuc_thr, fg_thr, background, clearance)
    cal = StainCalibration(
        background_darkness=bg_dark,
        background_score=bg_score,
        fg_threshold=fg_thr,
        cyto_threshold=bg_dark + CYTO_MARGIN_OD,
        nucleus_threshold=nuc_thr,
        source=source,
        background_eosin=background[0],
        background_blue=background[1],
        rbc_eosin=rbc_eosin,
        rbc_blue=rbc_blue,
        rbc_source=rbc_source,
    )
    logger.debug("stain calibration: %s", cal)
    return cal
