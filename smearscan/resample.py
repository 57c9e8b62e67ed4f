"""Windowed reading and resampling between the source scale and the model scale.

Models work at a fixed scale (``ModelSpec.input_pixel_size_um``). A slide of
pixel size ``p_src`` is resampled by the factor ``s = p_src / p_model``
(model pixels per source pixel): model pixel ``i`` has its centre at source
coordinate ``u = (i + 0.5) / s - 0.5`` (the half-pixel-centre convention of
OpenCV's resize). Every window is resampled with the same absolute mapping,
so tiles agree with the whole image. Downsampling is anti-aliased with a
Gaussian of ``sigma = sqrt(f^2 - 1) / 2`` source pixels (``f = 1 / s``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from smearscan.tiling import Window

#: Reads a window of a source image: ``Window -> (h, w, 3) uint8``, mirrored past the edges.
Reader = Callable[[Window], np.ndarray]

#: Factors this close to 1 are treated as "no resampling".
_IDENTITY_TOLERANCE = 1e-6


def scale_factor(source_pixel_size_um: float, target_pixel_size_um: float) -> float:
    """Target pixels per source pixel: ``source_um / target_um``."""
    return source_pixel_size_um / target_pixel_size_um


def is_identity(s: float) -> bool:
    """True when the factor ``s`` needs no resampling."""
    return abs(s - 1.0) < _IDENTITY_TOLERANCE


def scaled_shape(height: int, width: int, s: float) -> tuple[int, int]:
    """Shape ``(rows, cols)`` of a ``height x width`` image resampled by ``s`` (>= 1 px)."""
    if is_identity(s):
        return height, width
    return max(1, round(height * s)), max(1, round(width * s))


def to_source(coord: np.ndarray | float, s: float) -> np.ndarray | float:
    """Map a model-scale pixel coordinate to the source scale (same axis)."""
    return (coord + 0.5) / s - 0.5


def read_window(array: Any, window: Window) -> np.ndarray:
    """Read ``window`` of an ``(H, W, ...)`` array, mirroring pixels outside the image.

    Args:
        array: numpy or dask array ``(H, W)`` or ``(H, W, C)``.
        window: Rows/columns to read; may extend past any edge.

    Returns:
        numpy array ``(window.height, window.width, ...)`` of the array's dtype;
        outside pixels are a mirror image (numpy ``symmetric`` padding,
        repeated as often as needed for tiny images).

    Raises:
        ValueError: The window does not overlap the image at all.
    """
    h, w = array.shape[:2]
    inside = window.intersect(Window(0, h, 0, w))
    if inside is None:
        raise ValueError(f"window {window} does not overlap the {h}x{w} image")
    data = array[inside.y0 : inside.y1, inside.x0 : inside.x1]
    data = np.asarray(data.compute() if hasattr(data, "compute") else data)
    pad = [
        (inside.y0 - window.y0, window.y1 - inside.y1),
        (inside.x0 - window.x0, window.x1 - inside.x1),
    ]
    if any(p for pair in pad for p in pair):
        pad += [(0, 0)] * (data.ndim - 2)
        data = np.pad(data, pad, mode="symmetric")
    return data


def array_reader(array: Any) -> Reader:
    """A :data:`Reader` over an in-memory (numpy or dask) ``(H, W, 3)`` array."""
    return lambda window: read_window(array, window)


def _antialias_sigma(s: float) -> float:
    f = 1.0 / s
    return 0.5 * math.sqrt(f * f - 1.0) if f > 1.0 else 0.0


def source_window(window: Window, s: float) -> tuple[Window, float]:
    """Source pixels needed to resample ``window`` (model scale), and the blur sigma.

    Returns:
        The source window (with a margin for interpolation and anti-aliasing)
        and the Gaussian sigma in source pixels (0 when upsampling).
    """
    sigma = _antialias_sigma(s)
    margin = math.ceil(3 * sigma) + 2
    u0 = to_source(window.y0, s)
    u1 = to_source(window.y1 - 1, s)
    v0 = to_source(window.x0, s)
    v1 = to_source(window.x1 - 1, s)
    src = Window(
        math.floor(u0) - margin,
        math.ceil(u1) + margin + 1,
        math.floor(v0) - margin,
        math.ceil(v1) + margin + 1,
    )
    return src, sigma


def resample_window(read: Reader, window: Window, s: float) -> np.ndarray:
    """Read a model-scale window of a source-scale image.

    Args:
        read: Reader of the source image (``(H, W, 3)`` uint8).
        window: Window in model-scale pixels (may extend past the edges).
        s: Model pixels per source pixel.

    Returns:
        uint8 ``(window.height, window.width, 3)``.
    """
    if is_identity(s):
        return read(window)
    src_win, sigma = source_window(window, s)
    src = read(src_win)
    if sigma > 0:
        src = cv2.GaussianBlur(
            src, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT
        )
    inv = 1.0 / s
    matrix = np.array(
        [
            [inv, 0.0, to_source(window.x0, s) - src_win.x0],
            [0.0, inv, to_source(window.y0, s) - src_win.y0],
        ],
        dtype=np.float64,
    )
    return cv2.warpAffine(
        src,
        matrix,
        (window.width, window.height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )


def resample_image(image: Any, s: float) -> np.ndarray:
    """Resample a whole image by ``s`` (see :func:`resample_window`)."""
    h, w = scaled_shape(image.shape[0], image.shape[1], s)
    return resample_window(array_reader(image), Window(0, h, 0, w), s)


def probabilities_to_source(probs: np.ndarray, s: float, height: int, width: int) -> np.ndarray:
    """Bring a model-scale probability map back to the source grid (bilinear).

    Args:
        probs: float32 ``(C, h, w)`` at the model scale.
        s: Model pixels per source pixel.
        height: Source rows.
        width: Source columns.

    Returns:
        float32 ``(C, height, width)``.
    """
    if is_identity(s):
        return probs
    # source pixel u sits at model coordinate (u + 0.5) * s - 0.5
    matrix = np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]], dtype=np.float64)
    return np.stack(
        [
            cv2.warpAffine(
                np.ascontiguousarray(p, dtype=np.float32),
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            )
            for p in probs
        ]
    )


def nearest_indices(n_out: int, p: float, s: float, n_in: int) -> np.ndarray:
    """Index on a grid of scale ``s`` nearest to each pixel centre of a grid of scale ``p``.

    Both scales are pixels per source pixel along one axis (``p = 1``: the source).

    Args:
        n_out: Pixels of the output grid along the axis.
        p: Output pixels per source pixel.
        s: Input (e.g. mask) pixels per source pixel.
        n_in: Input pixels along the axis.

    Returns:
        int64 ``(n_out,)`` indices in ``[0, n_in)``.
    """
    source = to_source(np.arange(n_out, dtype=np.float64), p)
    index = np.rint((np.asarray(source) + 0.5) * s - 0.5).astype(np.int64)
    return np.clip(index, 0, n_in - 1)


def labels_to_source(labels: np.ndarray, s: float, height: int, width: int) -> np.ndarray:
    """Label image at model scale ``s`` brought to the source grid (nearest neighbour).

    Args:
        labels: Integer ``(h, w)`` labels at ``s`` model pixels per source pixel.
        s: Model pixels per source pixel.
        height: Source rows.
        width: Source columns.

    Returns:
        ``(height, width)`` labels of the same dtype.
    """
    rows = nearest_indices(height, 1.0, s, labels.shape[0])
    cols = nearest_indices(width, 1.0, s, labels.shape[1])
    return np.asarray(labels)[rows[:, None], cols[None, :]]
