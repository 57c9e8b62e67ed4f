"""Inputs of the cell classifier: crops at a canonical scale and morphometry vectors.

A crop is the square ``crop_px x crop_px`` patch of the slide centred on the
cell's centroid, resampled to ``crop_pixel_size_um`` (the same resampling as
the segmentation input, :func:`smearscan.resample.resample_window`, mirrored
past the image edges), so a cell's size in the crop is its size in µm
whatever the camera. Training crops are cut with the same function from the
same centroids the product finds, so training and ``process`` see the same
thing.

The morphometry vector holds, per feature of :data:`FEATURES`, the value
divided by a typical scale (so all are of order 1), NaN replaced by 0, and an
indicator that is 1 where the value was missing (a cell with no nucleus, a
slide with no RBCs for ``size_vs_rbc``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from smearscan.resample import Reader, resample_window, scale_factor
from smearscan.tiling import Window

#: Morphometry columns fed to the classifier -> the typical scale they are divided by.
FEATURES: dict[str, float] = {
    "equivalent_diameter_um": 10.0,
    "nc_ratio": 1.0,
    "nucleus_circularity": 1.0,
    "nucleus_lobes": 3.0,
    "solidity": 1.0,
    "size_vs_rbc": 1.5,
}

#: Morphometry columns kept with each labelled cell: the classifier's features and
#: what the blast rule (:mod:`smearscan.blast`) reads besides them.
MEASURED: tuple[str, ...] = (*FEATURES, "cytoplasm_mean_lab_l")

#: Default crop side (px) and scale (µm/px): 28.8 µm, room for a 20 µm monocyte.
CROP_PX = 96
CROP_PIXEL_SIZE_UM = 0.3


def crop_window(x: float, y: float, s: float, crop_px: int) -> Window:
    """The crop-scale window of side ``crop_px`` centred on source pixel ``(x, y)``.

    Args:
        x: Centroid column in source pixels.
        y: Centroid row in source pixels.
        s: Crop pixels per source pixel.
        crop_px: Side of the crop.
    """
    cx, cy = (x + 0.5) * s - 0.5, (y + 0.5) * s - 0.5
    x0 = round(cx - crop_px / 2 + 0.5)
    y0 = round(cy - crop_px / 2 + 0.5)
    return Window(y0, y0 + crop_px, x0, x0 + crop_px)


def cut_crops(
    read: Reader,
    centres_xy: np.ndarray,
    source_pixel_size_um: float,
    crop_px: int = CROP_PX,
    crop_pixel_size_um: float = CROP_PIXEL_SIZE_UM,
) -> np.ndarray:
    """Crops centred on cells, at the classifier's scale.

    Args:
        read: Reader of the source image (uint8 RGB).
        centres_xy: float ``(N, 2)`` centroids ``(x, y)`` in source pixels.
        source_pixel_size_um: Pixel size of the source image.
        crop_px: Crop side in pixels.
        crop_pixel_size_um: Crop scale in µm/px.

    Returns:
        uint8 ``(N, crop_px, crop_px, 3)``.
    """
    centres = np.asarray(centres_xy, dtype=np.float64).reshape(-1, 2)
    s = scale_factor(source_pixel_size_um, crop_pixel_size_um)
    out = np.empty((len(centres), crop_px, crop_px, 3), np.uint8)
    for i, (x, y) in enumerate(centres):
        out[i] = resample_window(read, crop_window(float(x), float(y), s, crop_px), s)
    return out


def feature_matrix(
    rows: pd.DataFrame | Sequence[Mapping[str, Any]], names: Sequence[str]
) -> np.ndarray:
    """Scaled morphometry values and missing-value indicators of each cell.

    Args:
        rows: Morphometry per cell (a DataFrame, or dicts such as Cells rows); a
            missing column counts as missing for every cell.
        names: Feature names, keys of :data:`FEATURES`.

    Returns:
        float32 ``(N, 2 * len(names))``: the scaled values, then the indicators.

    Raises:
        ValueError: An unknown feature name.
    """
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown classifier features {unknown}; known: {sorted(FEATURES)}")
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    n = len(frame)
    values = np.full((n, len(names)), np.nan)
    for j, name in enumerate(names):
        if name in frame.columns:
            values[:, j] = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64)
            values[:, j] /= FEATURES[name]
    missing = ~np.isfinite(values)
    values[missing] = 0.0
    return np.concatenate([values, missing], axis=1).astype(np.float32)


#: Crop normalisations: ``scale`` maps 0..255 to [-1, 1]; ``standardise`` gives each
#: channel of each crop zero mean and unit variance (a grey-world white balance and
#: contrast normalisation: a lab's stain tint and illumination are taken out).
NORMALISATIONS = ("scale", "standardise")


def normalise_crops(crops: np.ndarray, mode: str = "scale") -> np.ndarray:
    """uint8 ``(N, S, S, 3)`` crops -> float32 ``(N, 3, S, S)`` network input.

    Raises:
        ValueError: An unknown ``mode`` (see :data:`NORMALISATIONS`).
    """
    x = np.asarray(crops, dtype=np.float32).transpose(0, 3, 1, 2)
    if mode == "scale":
        return x / 127.5 - 1.0
    if mode == "standardise":
        mean = x.mean(axis=(2, 3), keepdims=True)
        std = x.std(axis=(2, 3), keepdims=True)
        return (x - mean) / np.maximum(std, 1.0)
    raise ValueError(f"unknown crop normalisation {mode!r}; known: {NORMALISATIONS}")
