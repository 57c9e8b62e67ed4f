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
#: Fallback nucleus threshold above the background score for samples without a WBC.
FALLBACK_NUCLEUS_GAP = 0.6
#: Fallback nucleus threshold above the 99.5th percentile of the foreground score.
FALLBACK_FG_TAIL_MARGIN = 0.1


@dataclass(frozen=True)
class StainFeatures:
    """Per-pixel colour features of one RGB image.

    Attributes:
        darkness: float32 ``(H, W)``, summed optical density (unitless OD).
        nucleus_score: float32 ``(H, W)``, ``OD_G - OD_B + 0.5 * OD_R``.
        eosin: float32 ``(H, W)``, ``OD_G - OD_R``.
    """

    darkness: np.ndarray
    nucleus_score: np.ndarray
    eosin: np.ndarray


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
    """

    background_darkness: float
    background_score: float
    fg_threshold: float
    cyto_threshold: float
    nucleus_threshold: float
    source: str


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
    )


def _subsample(rgb: np.ndarray) -> np.ndarray:
    """Stride-subsample whole rows/columns so that at most ~MAX_CALIBRATION_PIXELS remain."""
    step = int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / MAX_CALIBRATION_PIXELS)))
    return rgb if step <= 1 else np.ascontiguousarray(rgb[::step, ::step])


def _nucleus_threshold(
    score: np.ndarray, fg_score: np.ndarray, bg_score: float
) -> tuple[float, str]:
    """Nucleus-score threshold of a slide and how it was found.

    1. Otsu on the whole sample, when its upper class is clearly above the
       background (nuclei are a large share of the sample, e.g. a WBC crop).
    2. Otsu on the foreground only, when its upper class is clearly above both
       the rest of the foreground (RBCs) and the background: a field where
       nuclei are ~1 % of the pixels and strongly stained RBCs would
       otherwise take the whole-sample split.
    3. Otherwise the sample holds no WBC: a threshold above the background and
       the 99.5th percentile of the foreground, so no RBC is taken for a nucleus.
    """
    t_all = float(threshold_otsu(score))
    if t_all - bg_score >= MIN_NUCLEUS_GAP:
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


def calibrate_stain(sample: np.ndarray) -> StainCalibration:
    """Fix the slide-level thresholds from a sample of the slide.

    Background: Otsu on darkness splits the sample; the median darkness/score of the
    lower class is the background level and the foreground thresholds are fixed margins
    above it. Nuclei: see :func:`_nucleus_threshold` (whole-sample Otsu, else
    foreground Otsu, else a no-WBC fallback that takes no RBC for a nucleus).

    Args:
        sample: RGB uint8 ``(H, W, 3)`` sample of the slide at the segmenter's input scale.

    Returns:
        The slide's :class:`StainCalibration`.
    """
    check_rgb(sample, "calibration sample")
    feats = stain_features(_subsample(sample))
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
    cal = StainCalibration(
        background_darkness=bg_dark,
        background_score=bg_score,
        fg_threshold=fg_thr,
        cyto_threshold=bg_dark + CYTO_MARGIN_OD,
        nucleus_threshold=nuc_thr,
        source=source,
    )
    logger.debug("stain calibration: %s", cal)
    return cal
