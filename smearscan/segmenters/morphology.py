"""Local binary morphology helpers of the classical segmenter.

Every helper here has a bounded spatial support (stated in its docstring), so that a
crop extended by the sum of the supports gives the same result on its centre as the
whole image. Connected-component filters use the bounding-box side as the "small"
criterion: a component with a side of at most ``max_side`` px lies within ``max_side``
px of each of its pixels, and a component truncated by a crop border at least that far
away is never small, so the decision is local with radius ``max_side``.
"""

from __future__ import annotations

import cv2
import numpy as np

_KERNELS: dict[int, np.ndarray] = {}


def disk(radius: int) -> np.ndarray:
    """Elliptical (disk) structuring element, uint8 ``(2r+1, 2r+1)``."""
    if radius not in _KERNELS:
        _KERNELS[radius] = cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)
        )
    return _KERNELS[radius]


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a bool ``(H, W)`` mask by a disk of ``radius`` px (support ``radius``)."""
    if radius <= 0:
        return mask
    return cv2.dilate(mask.view(np.uint8), disk(radius)).view(bool)


def opening(mask: np.ndarray, radius: int) -> np.ndarray:
    """Morphological opening of a bool mask with a disk (support ``2 * radius``)."""
    if radius <= 0:
        return mask
    return cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_OPEN, disk(radius)).view(bool)


def closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """Morphological closing of a bool mask with a disk (support ``2 * radius``).

    Outside the image the mask counts as background for the dilation and foreground for
    the erosion (OpenCV's default), so objects on the image border are not eaten.
    """
    if radius <= 0:
        return mask
    return cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_CLOSE, disk(radius)).view(bool)


def component_stats(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a bool mask.

    Returns:
        ``labels`` int32 ``(H, W)`` (0 = outside the mask) and ``stats`` int32 ``(n, 5)``
        as returned by ``cv2.connectedComponentsWithStats`` (row 0 is the background).
    """
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    return labels, stats


def small_component_ids(stats: np.ndarray, max_side: int, max_area: int) -> np.ndarray:
    """Bool ``(n,)`` flags of the components whose bbox sides are <= ``max_side`` px and
    whose area is <= ``max_area`` px (index 0, the background, is never small)."""
    side = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    small = (side <= max_side) & (stats[:, cv2.CC_STAT_AREA] <= max_area)
    small[0] = False
    return small


def fill_small_holes(mask: np.ndarray, max_side: int, max_area: int) -> np.ndarray:
    """Fill the holes of a bool mask that fit a ``max_side`` px box (support ``max_side``).

    A hole is a connected component of the complement (4-connected) that is small in the
    sense of :func:`small_component_ids`; e.g. the pale centre of an RBC.
    """
    inv = (~mask).view(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4, ltype=cv2.CV_32S)
    small = small_component_ids(stats, max_side, max_area)
    return mask | small[labels]


def remove_small(mask: np.ndarray, max_side: int, max_area: int) -> np.ndarray:
    """Remove the small components of a bool mask (support ``max_side``)."""
    labels, stats = component_stats(mask)
    return mask & ~small_component_ids(stats, max_side, max_area)[labels]
