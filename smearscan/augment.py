"""Data augmentation for training the segmentation models.

A training sample is three aligned arrays of the same height ``H`` and width ``W``:

* ``image``: RGB ``uint8`` array of shape ``(H, W, 3)``;
* ``target``: class map, ``uint8`` array of shape ``(H, W)`` with values 0..4 (background,
  rbc, wbc_cytoplasm, wbc_nucleus, platelet) and :data:`IGNORE_INDEX` (255) for "no label";
* ``weight``: per-pixel loss weight, ``float32`` array of shape ``(H, W)`` in ``[0, 1]``
  (weak labels get less than 1, ignored pixels 0).

:func:`augment` draws random parameters from a :class:`numpy.random.Generator` and applies,
in this order:

Geometric transforms (the same mapping for all three arrays):

1. Horizontal and vertical flips, each with probability 1/2, and a rotation by a random
   multiple of 90 degrees (only 0 or 180 degrees for non-square samples, so that the shape
   is kept). A smear has no preferred orientation: cells look the same upside down or
   mirrored, so the models must be invariant to these exactly.
2. A small rotation (``max_rotation_deg``) and isotropic scaling (``scale_range``) about
   the centre, in one :func:`cv2.warpAffine`. This covers the remaining orientations and
   the spread of magnifications and pixel sizes between scanners. The image is resampled
   bilinearly with a reflected border; target and weight are resampled with *nearest
   neighbour* (labels are never interpolated, so no invented class values appear).
   Border policy: pixels brought in from outside the sample get target 255 and weight 0,
   i.e. they are ignored by the loss. The image there is the reflection of its inside
   (which keeps the statistics of the image natural for the network), but the labels are
   not reflected: a mirrored half-cell at the border is not a real cell and must not be
   supervised.

Photometric transforms (image only; target and weight are never touched):

3. Stain jitter in optical-density space, ``OD_c = -ln((I_c + 1) / 256)``:
   ``OD_c' = a_c * OD_c + b_c`` with ``a_c ~ U(1 - s, 1 + s)``, ``b_c ~ U(-s, s)`` per RGB
   channel (``s = stain_jitter``). Romanowsky stains (Wright, Giemsa, May-Grunwald-Giemsa,
   Leishman) vary a lot between labs, batches and staining times; in OD space the stain
   amounts are additive, so scaling the OD changes the amount of dye and shifting it
   changes the illumination / white balance, the two main sources of colour variation.
4. Brightness (additive, ``U(-brightness, brightness)`` of full scale) and contrast
   (factor ``U(1 - contrast, 1 + contrast)`` about the mean grey level of the image).
   Steps 3 and 4 are per-channel maps of the 256 grey levels and are applied together as
   one look-up table.
5. Hue rotation (``U(-hue_shift_deg, hue_shift_deg)`` degrees) and saturation scaling
   (factor ``U(1 - saturation, 1 + saturation)``) in float HSV via :func:`cv2.cvtColor`.
6. Gaussian blur with probability :data:`BLUR_PROBABILITY` and sigma
   ``U(0, blur_sigma_max)`` pixels (focus differences between scanners and slides).
7. Additive Gaussian noise with sigma ``U(0, noise_sigma_max)`` grey levels (sensor noise),
   independent per pixel and channel. For speed it is drawn as uniform random bytes mapped
   to 256 Gaussian quantiles (truncated at about 2.9 sigma), which is ample for sensor noise.

The photometric steps run in ``float32`` and the image is rounded back to ``uint8`` once at
the end. Steps whose parameters are zero in the config are skipped entirely, so
:meth:`AugmentConfig.none` reproduces the sample exactly.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import cv2
import numpy as np

from smearscan.errors import ConfigError

__all__ = ["BLUR_PROBABILITY", "IGNORE_INDEX", "AugmentConfig", "augment"]

#: Target value of pixels without a label (also given to pixels brought in from outside).
IGNORE_INDEX = 255
#: Probability that a sample is blurred at all (when ``blur_sigma_max > 0``).
BLUR_PROBABILITY = 0.5

_GREY_LEVELS = np.arange(256, dtype=np.float64)
#: Optical density of each grey level, ``-ln((I + 1) / 256)``, shape (256,).
_OD = -np.log((_GREY_LEVELS + 1.0) / 256.0)
#: Standard-normal quantiles at (k + 0.5) / 256, k = 0..255, rescaled to unit variance: a
#: uniform random byte mapped through this table is (a 256-level approximation of) N(0, 1).
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((k + 0.5) / 256.0) for k in range(256)])
_NORMAL_QUANTILES /= _NORMAL_QUANTILES.std()


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentations; a zero range switches a transform off.

    Attributes:
        flips: Random horizontal and vertical flips (each with probability 1/2).
        rot90: Random rotation by a multiple of 90 degrees (0 or 180 for non-square samples).
        max_rotation_deg: Largest extra rotation, degrees, in ``[0, 180]``; drawn uniformly
            from ``[-max_rotation_deg, max_rotation_deg]``.
        scale_range: ``(low, high)`` zoom factors, ``0 < low <= high``; drawn uniformly.
            ``(1.0, 1.0)`` disables scaling.
        brightness: Additive brightness shift, fraction of full scale, in ``[0, 1]``.
        contrast: Contrast factor range ``1 +- contrast``, in ``[0, 1)``.
        hue_shift_deg: Largest hue rotation, degrees, in ``[0, 180]``.
        saturation: Saturation factor range ``1 +- saturation``, in ``[0, 1)``.
        stain_jitter: Per-channel optical-density scale range ``1 +- stain_jitter`` and
            shift range ``+- stain_jitter`` (OD units), in ``[0, 1)``.
        blur_sigma_max: Largest Gaussian blur sigma, pixels, in ``[0, 10]``.
        noise_sigma_max: Largest Gaussian noise sigma, grey levels (of 255), in ``[0, 64]``.

    Raises:
        ConfigError: On a value of the wrong type, non-finite or out of its range.
    """

    flips: bool = True
    rot90: bool = True
    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1
    contrast: float = 0.15
    hue_shift_deg: float = 8.0
    saturation: float = 0.15
    stain_jitter: float = 0.1
    blur_sigma_max: float = 0.8
    noise_sigma_max: float = 3.0

    def __post_init__(self) -> None:
        for name in ("flips", "rot90"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"augment {name} must be true or false")
        try:
            low, high = (float(v) for v in self.scale_range)
        except (TypeError, ValueError):
            raise ConfigError(
                f"augment scale_range must be two numbers (low, high), got {self.scale_range!r}"
            ) from None
        if not (math.isfinite(low) and math.isfinite(high) and 0.0 < low <= high):
            raise ConfigError(
                f"augment scale_range must satisfy 0 < low <= high, got ({low}, {high})"
            )
        object.__setattr__(self, "scale_range", (low, high))

        limits = {  # name: (upper bound, upper bound inclusive)
            "max_rotation_deg": (180.0, True),
            "brightness": (1.0, True),
            "contrast": (1.0, False),
            "hue_shift_deg": (180.0, True),
            "saturation": (1.0, False),
            "stain_jitter": (1.0, False),
            "blur_sigma_max": (10.0, True),
            "noise_sigma_max": (64.0, True),
        }
        for name, (upper, inclusive) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"augment {name} must be a number, got {value!r}")
            value = float(value)
            in_range = 0.0 <= value <= upper if inclusive else 0.0 <= value < upper
            if not (math.isfinite(value) and in_range):
                bound = "]" if inclusive else ")"
                raise ConfigError(f"augment {name} must be in [0, {upper:g}{bound}, got {value}")
            object.__setattr__(self, name, value)

    @classmethod
    def none(cls) -> AugmentConfig:
        """Return a config under which :func:`augment` returns exact copies of its inputs."""
        return cls(**_GEOMETRIC_OFF, **_PHOTOMETRIC_OFF)

    @classmethod
    def geometric_only(cls) -> AugmentConfig:
        """Return the default geometric transforms with every photometric transform off."""
        return cls(**_PHOTOMETRIC_OFF)

    @classmethod
    def photometric_only(cls) -> AugmentConfig:
        """Return the default photometric transforms with every geometric transform off."""
        return cls(**_GEOMETRIC_OFF)


_GEOMETRIC_OFF: dict[str, Any] = {
    "flips": False,
    "rot90": False,
    "max_rotation_deg": 0.0,
    "scale_range": (1.0, 1.0),
}
"""AugmentConfig fields that turn every geometric transform off."""

_PHOTOMETRIC_OFF: dict[str, Any] = {
    "brightness": 0.0,
    "contrast": 0.0,
    "hue_shift_deg": 0.0,
    "saturation": 0.0,
    "stain_jitter": 0.0,
    "blur_sigma_max": 0.0,
    "noise_sigma_max": 0.0,
}
"""AugmentConfig fields that turn every photometric transform off."""


def _check_sample(image: np.ndarray, target: np.ndarray, weight: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if target.dtype != np.uint8 or target.shape != image.shape[:2]:
        raise ValueError(
            f"target must be uint8 {image.shape[:2]}, got {target.dtype} {target.shape}"
        )
    if weight.dtype != np.float32 or weight.shape != image.shape[:2]:
        raise ValueError(
            f"weight must be float32 {image.shape[:2]}, got {weight.dtype} {weight.shape}"
        )


def _geometric(
    image: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flips, rot90 and one rotation + scale warp, identical for the three arrays.

    Without a rotation or scaling the flips and rot90 are exact numpy index operations;
    with one they are folded into the matrix of the single :func:`cv2.warpAffine` per array.
    """
    height, width = target.shape
    hflip = vflip = False
    k = 0
    if config.flips:
        hflip = bool(rng.random() < 0.5)
        vflip = bool(rng.random() < 0.5)
    if config.rot90:
        k = int(rng.integers(4)) if height == width else 2 * int(rng.integers(2))
    angle = 0.0
    if config.max_rotation_deg > 0.0:
        angle = float(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    low, high = config.scale_range
    scale = float(rng.uniform(low, high)) if high > low else low

    if angle == 0.0 and scale == 1.0:
        if hflip:
            image, target, weight = image[:, ::-1], target[:, ::-1], weight[:, ::-1]
        if vflip:
            image, target, weight = image[::-1], target[::-1], weight[::-1]
        if k:
            image = np.rot90(image, k, axes=(0, 1))
            target = np.rot90(target, k)
            weight = np.rot90(weight, k)
        return (
            np.ascontiguousarray(image),
            np.ascontiguousarray(target),
            np.ascontiguousarray(weight),
        )

    # Forward maps of pixel coordinates (x = column, y = row) as 3x3 matrices, applied in the
    # order of the numpy path above: horizontal flip, vertical flip, k x np.rot90, warp.
    xmax, ymax = width - 1.0, height - 1.0
    d4 = np.eye(3)
    if hflip:
        d4 = np.array([[-1.0, 0.0, xmax], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ d4
    if vflip:
        d4 = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, ymax], [0.0, 0.0, 1.0]]) @ d4
    if k % 2:  # np.rot90 once (square images only): (x, y) -> (y, xmax - x)
        d4 = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, xmax], [0.0, 0.0, 1.0]]) @ d4
    if k >= 2:  # 180 degrees: (x, y) -> (xmax - x, ymax - y)
        d4 = np.array([[-1.0, 0.0, xmax], [0.0, -1.0, ymax], [0.0, 0.0, 1.0]]) @ d4
    warp = np.vstack([cv2.getRotationMatrix2D((xmax / 2.0, ymax / 2.0), angle, scale), [0, 0, 1]])
    matrix = (warp @ d4)[:2]
    size = (width, height)
    image = cv2.warpAffine(
        image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    target = cv2.warpAffine(
        target,
        matrix,
        size,
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=IGNORE_INDEX,
    )
    weight = cv2.warpAffine(
        weight,
        matrix,
        size,
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return image, target, weight


def _tone_lut(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Per-channel look-up table (256, 3) float32 in [0, 1]: stain jitter, brightness, contrast."""
    levels = np.repeat(_GREY_LEVELS[:, None], 3, axis=1)  # (256, 3), grey levels 0..255
    s = config.stain_jitter
    if s > 0.0:
        a = rng.uniform(1.0 - s, 1.0 + s, size=3)
        b = rng.uniform(-s, s, size=3)
        od = np.maximum(_OD[:, None] * a + b, 0.0)
        levels = 256.0 * np.exp(-od) - 1.0
    if config.contrast > 0.0:
        factor = rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
        # Mean grey level of the (stain-jittered) image, from the channel histograms.
        hists = [cv2.calcHist([image], [c], None, [256], [0, 256]) for c in range(3)]
        hist = np.stack([h.reshape(-1) for h in hists], axis=1)
        mean = float((hist * np.clip(levels, 0.0, 255.0)).sum() / hist.sum())
        levels = (levels - mean) * factor + mean
    if config.brightness > 0.0:
        levels = levels + 255.0 * rng.uniform(-config.brightness, config.brightness)
    return (np.clip(levels, 0.0, 255.0) / 255.0).astype(np.float32)


def _photometric(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Stain, brightness/contrast, hue/saturation, blur and noise on the image only."""
    tone = config.stain_jitter > 0.0 or config.contrast > 0.0 or config.brightness > 0.0
    colour = config.hue_shift_deg > 0.0 or config.saturation > 0.0
    blur = config.blur_sigma_max > 0.0
    noise = config.noise_sigma_max > 0.0
    if not (tone or colour or blur or noise):
        return image

    # One float32 working buffer (H, W, 3), values in [0, 1] up to the noise; every step
    # below writes into it in place (fresh 3 MB buffers per step cost more than the maths).
    rgb: np.ndarray
    if tone:
        rgb = cv2.LUT(image, _tone_lut(image, rng, config).reshape(1, 256, 3))
    else:
        rgb = image.astype(np.float32)
        np.multiply(rgb, np.float32(1.0 / 255.0), out=rgb)

    if colour:
        # Float HSV: H in degrees [0, 360), S and V in [0, 1].
        cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV, dst=rgb)
        if config.hue_shift_deg > 0.0:
            shift = rng.uniform(-config.hue_shift_deg, config.hue_shift_deg) % 360.0
            hue: np.ndarray = cv2.extractChannel(rgb, 0)  # contiguous (H, W) plane
            np.add(hue, np.float32(shift), out=hue)
            np.subtract(hue, np.float32(360.0), out=hue, where=hue >= 360.0)
            cv2.insertChannel(hue, rgb, 0)
        if config.saturation > 0.0:
            factor = rng.uniform(1.0 - config.saturation, 1.0 + config.saturation)
            sat: np.ndarray = cv2.extractChannel(rgb, 1)
            np.multiply(sat, np.float32(factor), out=sat)
            np.minimum(sat, np.float32(1.0), out=sat)
            cv2.insertChannel(sat, rgb, 1)
        cv2.cvtColor(rgb, cv2.COLOR_HSV2RGB, dst=rgb)

    if blur and rng.random() < BLUR_PROBABILITY:
        sigma = float(rng.uniform(0.0, config.blur_sigma_max))
        if sigma > 0.0:
            cv2.GaussianBlur(rgb, (0, 0), sigma, dst=rgb, borderType=cv2.BORDER_REFLECT_101)

    if noise:
        sigma = float(rng.uniform(0.0, config.noise_sigma_max)) / 255.0
        # Uniform random bytes mapped to Gaussian quantiles: ~8x faster than standard_normal.
        levels = rng.integers(0, 256, size=rgb.shape, dtype=np.uint8)
        noise_lut = (_NORMAL_QUANTILES * sigma).astype(np.float32).reshape(1, 256, 1)
        np.add(rgb, cv2.LUT(levels, noise_lut), out=rgb)

    # Back to grey levels, rounded to nearest and clipped.
    np.multiply(rgb, np.float32(255.0), out=rgb)
    np.add(rgb, np.float32(0.5), out=rgb)
    np.clip(rgb, 0.0, 255.0, out=rgb)
    return rgb.astype(np.uint8)


def augment(
    image: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Randomly transform one training sample (see the module docstring for the transforms).

    Args:
        image: RGB image, ``uint8``, shape ``(H, W, 3)``.
        target: Class map, ``uint8``, shape ``(H, W)``; 255 means "ignore".
        weight: Per-pixel loss weight, ``float32``, shape ``(H, W)``, in ``[0, 1]``.
        rng: Source of all randomness; the same generator state and config give the same
            output. The generator is advanced.
        config: Ranges of the transforms.

    Returns:
        ``(image, target, weight)`` with the input shapes and dtypes, as new arrays (the
        inputs are never modified). Target values are input target values or 255 (pixels
        brought in from outside the sample); weight values are input weight values or 0
        (exactly where target became 255 through the border).

    Raises:
        ValueError: If the arrays do not have the shapes and dtypes above.
    """
    _check_sample(image, target, weight)
    out_image, out_target, out_weight = _geometric(image, target, weight, rng, config)
    out_image = _photometric(out_image, rng, config)
    # The steps above may return views of (or the very) input arrays: copy those.
    if np.shares_memory(out_image, image):
        out_image = out_image.copy()
    if np.shares_memory(out_target, target):
        out_target = out_target.copy()
    if np.shares_memory(out_weight, weight):
        out_weight = out_weight.copy()
    return out_image, out_target, out_weight
