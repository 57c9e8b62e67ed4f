"""Is there a smear on the field at all? The ``NO_SMEAR`` check, run before segmentation.

A bright-field smear image has two physical properties that a field without
a smear (all black, all white, one uniform grey, a float image of NaN) lacks:

* an illuminated background: the glass between the cells transmits most of
  the lamp's light, so the brightest part of the field is bright. The
  background level is the 99th percentile of the grey image; below
  :data:`MIN_BACKGROUND_GREY` (an eighth of full scale) no light reached the
  camera through glass (lens cap, shutter closed, lamp off, an all-black or
  NaN file);
* stained cells that absorb light: the optical density
  ``-log10(I_c / I0_c)`` against the field's own white point ``I0`` (per
  channel) reaches :data:`STAIN_OD` (a fifth of the light absorbed) in the
  most absorbed channel over RBCs (0.15-0.5 in green for a Romanowsky stain)
  and WBC nuclei (0.5 and more). Fewer than :data:`MIN_STAINED_FRACTION` of
  the pixels that absorbed means no contrast: no cell on the field.

The image is smoothed first (Gaussian, sigma :data:`SMOOTH_SIGMA_PX` pixels)
so that sensor noise and JPEG artefacts on a uniform field do not count as
contrast, while any cell wider than a few pixels does. A slide is sampled
like the quality measures: at most ``max_windows`` windows of ``window_px``²
source pixels on an even grid (a camera field is covered whole).

A field without a smear is not segmented: :func:`fill_no_smear` writes its
masks as all background (class 0, background probability 1) beside its
resampled image, so its OME-Zarr group, cell labels (none) and previews are
there like those of any other field.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from smearscan.quality import sample_windows
from smearscan.resample import Reader, resample_window
from smearscan.results import SlideResult
from smearscan.tiling import Window
from smearscan.zarr_store import SlideStore

log = logging.getLogger(__name__)

#: Least grey level (0-255) of the brightest 1 % of a field that has an illuminated background.
MIN_BACKGROUND_GREY = 32.0
#: Optical density (log10) that a stained cell reaches in its most absorbed channel.
STAIN_OD = 0.1
#: Least share of the pixels absorbing :data:`STAIN_OD` for a field to show any cell.
MIN_STAINED_FRACTION = 1e-3
#: Gaussian sigma (source pixels) of the smoothing before the measures.
SMOOTH_SIGMA_PX = 1.5


@dataclass(frozen=True)
class FieldContent:
    """What the blank-field check measured on a slide.

    Attributes:
        background_grey: Grey level (0-255) of the brightest 1 % of the smoothed field.
        stained_fraction: Share of the sampled pixels whose optical density against
            the field's white point reaches :data:`STAIN_OD` in some channel.
        windows: Windows sampled.
    """

    background_grey: float
    stained_fraction: float
    windows: int

    def blank_reason(self) -> str | None:
        """Why the field holds no smear (None: it does)."""
        if not self.background_grey >= MIN_BACKGROUND_GREY:  # NaN included
            return (
                f"no illuminated background: the brightest 1 % of the field is at grey level "
                f"{self.background_grey:.0f} of 255 (under {MIN_BACKGROUND_GREY:.0f}): a dark, "
                "black or empty image"
            )
        if self.stained_fraction < MIN_STAINED_FRACTION:
            return (
                f"no stained cells: {100 * self.stained_fraction:.3f} % of the field absorbs "
                f"optical density {STAIN_OD:g} or more (under {100 * MIN_STAINED_FRACTION:g} %): "
                "a uniform field without contrast (empty glass, all white or one grey)"
            )
        return None


def _smooth(rgb: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB smoothed with a Gaussian of :data:`SMOOTH_SIGMA_PX`, float32."""
    return cv2.GaussianBlur(
        rgb.astype(np.float32), (0, 0), SMOOTH_SIGMA_PX, borderType=cv2.BORDER_REFLECT
    )


def measure_content(windows: list[np.ndarray]) -> FieldContent:
    """Background level and stained share of some windows of one field.

    Args:
        windows: ``(h, w, 3)`` uint8 RGB windows of the field (source pixels).

    Returns:
        The pooled measures (the white point is common to all windows).
    """
    smooth = [_smooth(w).reshape(-1, 3) for w in windows if w.size]
    if not smooth:
        return FieldContent(float("nan"), 0.0, 0)
    pixels = np.concatenate(smooth)
    grey = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    background = float(np.percentile(grey, 99))
    bright = pixels[grey >= background]
    white = np.median(bright, axis=0) + 1.0  # per channel I0 (+1: a black channel stays finite)
    absorbed = ((pixels + 1.0) <= white * 10.0 ** (-STAIN_OD)).any(axis=1)
    return FieldContent(background, float(absorbed.mean()), len(smooth))


def field_content(
    read: Reader, height: int, width: int, *, window_px: int = 1024, max_windows: int = 16
) -> FieldContent:
    """Measure a slide for the blank-field check from a bounded sample of windows.

    Args:
        read: Reader of the source pixels (uint8 RGB windows).
        height: Source rows.
        width: Source columns.
        window_px: Side of the sampled windows (source px).
        max_windows: Most windows read.
    """
    windows = [read(w) for w in sample_windows(height, width, window_px, max_windows)]
    content = measure_content(windows)
    log.debug(
        "field content: background grey %.1f, stained %.4f of %d window(s)",
        content.background_grey,
        content.stained_fraction,
        content.windows,
    )
    if math.isnan(content.background_grey):
        log.debug("no pixels sampled")
    return content


def fill_no_smear(
    store: SlideStore, read: Reader, s: float, result: SlideResult, classes: Sequence[str]
) -> None:
    """Write the masks of a field without a smear: every pixel background, nothing predicted.

    ``labels/classes`` keeps its fill value 0 (background); the background
    probability is set to 1 (255) and the others stay 0; the resampled RGB
    image is written chunk by chunk when the store has one.

    Args:
        store: The slide's staged store.
        read: Reader of the source pixels.
        s: Model pixels per source pixel.
        result: Gets ``tiles`` 0, ``stitching``, ``class_fractions`` and ``mask_path``.
        classes: The model's class names, background first.
    """
    height, width = store.classes.shape
    step = int(store.classes.chunks[0])
    if store.probabilities is not None:
        store.probabilities[0] = 255
    if store.image is not None:
        for y in range(0, height, step):
            for x in range(0, width, step):
                w = Window(y, min(height, y + step), x, min(width, x + step))
                store.image[:, w.y0 : w.y1, w.x0 : w.x1] = resample_window(read, w, s).transpose(
                    2, 0, 1
                )
    result.tiles, result.stitching = 0, "none (NO_SMEAR)"
    result.class_fractions = {c: float(i == 0) for i, c in enumerate(classes)}
    result.mask_path = str(store.path)
