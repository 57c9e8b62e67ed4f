"""Image-quality measures of one slide: focus and stain intensity, at the model scale.

Both measures are computed on the slide's pixels at the segmentation model's
scale (the grid of the masks in ``OUT.zarr``), brought to
:data:`QUALITY_PIXEL_SIZE_UM` (0.2 µm/px, the scale of ``unet-v1``, so no
resampling there) when the model works at another scale. Fields from cameras
of any resolution are so compared at one physical scale; a value measured at
another scale is not comparable (the Laplacian of an image sampled twice as
finely is much weaker).
The semantic map ``labels/classes`` (0 background, 1 RBC, 2 WBC cytoplasm,
3 WBC nucleus, 4 platelet) tells which pixels are smear and which are glass.

* ``focus_laplacian_var``: variance of the 3x3 Laplacian of the grey image
  (0-255 scale, ITU-R 601 luma) over the smear pixels (classes 1-4, dilated by
  :data:`EDGE_MARGIN_PX` so that the cell borders, where the sharpness is,
  count fully). Empty glass is left out so a sparse field is not called blurred.
* ``stain_od``: optical density of the smear pixels in their most absorbed
  channel, ``max_c mean_px(-log10(I_c / I0_c))`` with ``I0`` the per-channel
  median of the glass (background) pixels: how much light the stained cells
  absorb relative to the slide's own white (green, for a Romanowsky stain);
  fading lowers it, whatever the lab's hue.
* ``nucleus_od``: the same over WBC nucleus pixels, and
  ``nucleus_saturation``: their mean HSV saturation (0-1); both NaN when there
  are fewer than :data:`MIN_NUCLEUS_PX` nucleus pixels (no WBC in the field).

A slide of any size costs little: at most ``max_windows`` windows of
``window_px``² model pixels are read, on an even grid over the slide, and the
sums over all windows are pooled.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from smearscan.resample import Reader, resample_window
from smearscan.tiling import Window
from smearscan.zarr_store import SlideStore

log = logging.getLogger(__name__)

#: Scale (µm/px) at which the measures are computed and the thresholds hold.
QUALITY_PIXEL_SIZE_UM = 0.2
#: Semantic class of WBC nucleus pixels in ``labels/classes``.
NUCLEUS_CLASS = 3
#: Smear pixels are dilated by this many model pixels before the Laplacian is pooled.
EDGE_MARGIN_PX = 2
#: Fewer nucleus pixels than this: ``nucleus_od`` and ``nucleus_saturation`` are NaN.
MIN_NUCLEUS_PX = 200
#: Fewer background pixels than this: the white point is the 99th grey percentile.
MIN_BACKGROUND_PX = 500


@dataclass(frozen=True)
class QualityMeasures:
    """Image-quality measures of one slide (see the module docstring).

    Attributes:
        focus_laplacian_var: Variance of the Laplacian of the grey image (grey
            levels², 0-255 scale) over smear pixels, at ``pixel_size_um``.
        stain_od: Optical density (dimensionless, log10) of the smear pixels in
            their most absorbed channel.
        nucleus_od: The same over WBC nucleus pixels; NaN without nuclei.
        nucleus_saturation: Mean HSV saturation (0-1) of the nucleus pixels;
            NaN without nuclei.
        smear_fraction: Share of the sampled pixels that are smear (classes 1-4).
        pixel_size_um: Scale the measures were computed at (µm/px,
            :data:`QUALITY_PIXEL_SIZE_UM`).
        windows: Windows sampled.
    """

    focus_laplacian_var: float
    stain_od: float
    nucleus_od: float
    nucleus_saturation: float
    smear_fraction: float
    pixel_size_um: float
    windows: int

    def as_dict(self) -> dict[str, float]:
        """The measures as ``{name: value}`` (rounded), for the Summary sheet.

        ``pixel_size_um`` is left out: it is the Summary's ``model_pixel_size_um``.
        """
        return {
            k: (round(float(v), 4) if math.isfinite(v) else float(v))
            for k, v in asdict(self).items()
            if k != "pixel_size_um"
        }


def sample_windows(height: int, width: int, window_px: int, max_windows: int) -> list[Window]:
    """Up to ``max_windows`` windows of ``window_px``² on an even grid over an image.

    A small image (fitting in ``max_windows`` windows) is covered whole.

    Args:
        height: Image rows (px).
        width: Image columns (px).
        window_px: Window side (px).
        max_windows: Most windows returned (>= 1).

    Returns:
        Windows inside the image, row-major.
    """
    rows = math.ceil(height / window_px)
    cols = math.ceil(width / window_px)
    if rows * cols <= max_windows:
        return [
            Window(y, min(height, y + window_px), x, min(width, x + window_px))
            for y in range(0, height, window_px)
            for x in range(0, width, window_px)
        ]
    n_rows = max(1, min(rows, round(math.sqrt(max_windows * height / width))))
    n_cols = max(1, min(cols, max_windows // n_rows))
    h, w = min(height, window_px), min(width, window_px)
    ys = np.linspace(0, height - h, n_rows).round().astype(int)
    xs = np.linspace(0, width - w, n_cols).round().astype(int)
    return [Window(int(y), int(y) + h, int(x), int(x) + w) for y in ys for x in xs]


@dataclass
class _Sums:
    """Pooled sums over the sampled windows."""

    lap_n: float = 0.0
    lap_sum: float = 0.0
    lap_sq: float = 0.0
    smear_n: float = 0.0
    smear_od: np.ndarray = field(default_factory=lambda: np.zeros(3))
    nucleus_n: float = 0.0
    nucleus_od: np.ndarray = field(default_factory=lambda: np.zeros(3))
    nucleus_saturation: float = 0.0
    pixels: float = 0.0
    windows: int = 0


def _optical_density(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per-channel OD, float32 ``(H, W, 3)``, of uint8 ``(H, W, 3)`` against a white point ``(3,)``.

    Pixels brighter than the white point get OD 0.
    """
    white = background.astype(np.float32)
    ratio = np.clip((rgb.astype(np.float32) + 1.0) / (white + 1.0), 1e-3, 1.0)
    od: np.ndarray = -np.log10(ratio)
    return od


def _white_point(rgb: np.ndarray, glass: np.ndarray) -> np.ndarray:
    """Per-channel median of the glass pixels (uint8 ``(3,)``); brightest grey otherwise."""
    if int(glass.sum()) >= MIN_BACKGROUND_PX:
        return np.median(rgb[glass], axis=0)
    grey = rgb.mean(axis=2)
    bright = grey >= np.percentile(grey, 99)
    return np.median(rgb[bright], axis=0)


def to_quality_scale(
    rgb: np.ndarray, classes: np.ndarray, pixel_size_um: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an RGB window and its classes from ``pixel_size_um`` to :data:`QUALITY_PIXEL_SIZE_UM`.

    Args:
        rgb: uint8 ``(h, w, 3)``.
        classes: uint8 ``(h, w)``.
        pixel_size_um: Their scale (µm/px).

    Returns:
        The pair at the quality scale (the inputs themselves when already there).
    """
    f = pixel_size_um / QUALITY_PIXEL_SIZE_UM
    if abs(f - 1.0) < 1e-3:
        return rgb, classes
    size = (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f)))
    interpolation = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return (
        cv2.resize(rgb, size, interpolation=interpolation),
        cv2.resize(classes, size, interpolation=cv2.INTER_NEAREST),
    )


def _accumulate(sums: _Sums, rgb: np.ndarray, classes: np.ndarray) -> None:
    """Add one window (uint8 RGB ``(h, w, 3)``, uint8 classes ``(h, w)``) to the sums."""
    glass = classes == 0
    smear = ~glass
    sums.pixels += classes.size
    sums.windows += 1
    n_smear = int(smear.sum())
    if n_smear == 0:
        return
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=3, borderType=cv2.BORDER_REFLECT)
    kernel = np.ones((2 * EDGE_MARGIN_PX + 1,) * 2, np.uint8)
    near = cv2.dilate(smear.astype(np.uint8), kernel).astype(bool)
    values = lap[near].astype(np.float64)
    sums.lap_n += values.size
    sums.lap_sum += float(values.sum())
    sums.lap_sq += float(np.square(values).sum())
    od = _optical_density(rgb, _white_point(rgb, glass))
    sums.smear_n += n_smear
    sums.smear_od += od[smear].sum(axis=0, dtype=np.float64)
    nucleus = classes == NUCLEUS_CLASS
    sums.nucleus_n += int(nucleus.sum())
    sums.nucleus_od += od[nucleus].sum(axis=0, dtype=np.float64)
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    sums.nucleus_saturation += float(saturation[nucleus].sum(dtype=np.float64)) / 255.0


def _measures(sums: _Sums) -> QualityMeasures:
    nan = float("nan")
    var = nan
    if sums.lap_n > 0:
        mean = sums.lap_sum / sums.lap_n
        var = max(0.0, sums.lap_sq / sums.lap_n - mean * mean)
    nuclei = sums.nucleus_n >= MIN_NUCLEUS_PX
    return QualityMeasures(
        focus_laplacian_var=var,
        stain_od=float(sums.smear_od.max()) / sums.smear_n if sums.smear_n else nan,
        nucleus_od=float(sums.nucleus_od.max()) / sums.nucleus_n if nuclei else nan,
        nucleus_saturation=sums.nucleus_saturation / sums.nucleus_n if nuclei else nan,
        smear_fraction=sums.smear_n / sums.pixels if sums.pixels else 0.0,
        pixel_size_um=QUALITY_PIXEL_SIZE_UM,
        windows=sums.windows,
    )


def measure_quality(rgb: np.ndarray, classes: np.ndarray, pixel_size_um: float) -> QualityMeasures:
    """Quality measures of one image held in memory.

    Args:
        rgb: uint8 ``(H, W, 3)`` RGB at the model scale.
        classes: uint8 ``(H, W)`` semantic map of the same grid.
        pixel_size_um: Scale of both (µm/px); brought to :data:`QUALITY_PIXEL_SIZE_UM`.

    Returns:
        The measures (pooled over the whole image as one window).

    Raises:
        ValueError: The shapes do not match or the image is not RGB uint8.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    if classes.shape != rgb.shape[:2]:
        raise ValueError(f"classes {classes.shape} do not match the image {rgb.shape[:2]}")
    sums = _Sums()
    _accumulate(sums, *to_quality_scale(rgb, np.asarray(classes), pixel_size_um))
    return _measures(sums)


def slide_quality(
    store: SlideStore,
    read: Reader,
    s: float,
    pixel_size_um: float,
    *,
    window_px: int = 1024,
    max_windows: int = 9,
) -> QualityMeasures:
    """Quality measures of a segmented slide, from a bounded sample of windows.

    The model-scale RGB comes from the store's ``image`` array when it was
    written, else it is resampled from the source through ``read``.

    Args:
        store: The slide's store, ``labels/classes`` written.
        read: Reader of the source pixels.
        s: Model pixels per source pixel.
        pixel_size_um: Model-scale pixel size (µm/px); the windows are brought
            to :data:`QUALITY_PIXEL_SIZE_UM`.
        window_px: Side of the sampled windows (model px).
        max_windows: Most windows read.

    Returns:
        The pooled measures.
    """
    height, width = store.classes.shape
    sums = _Sums()
    for w in sample_windows(height, width, window_px, max_windows):
        classes = np.asarray(store.classes[w.y0 : w.y1, w.x0 : w.x1])
        if store.image is not None:
            rgb = np.ascontiguousarray(
                np.asarray(store.image[:, w.y0 : w.y1, w.x0 : w.x1]).transpose(1, 2, 0)
            )
        else:
            rgb = resample_window(read, w, s)
        _accumulate(sums, *to_quality_scale(rgb, classes, pixel_size_um))
    return _measures(sums)
