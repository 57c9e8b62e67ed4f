"""Segmentation quality against expert masks (Dice), through the product's own path.

An image is segmented exactly as ``smearscan process`` does it: resampled to
the model's scale, calibrated, segmented by the tiled engine, and the blended
probabilities brought back to the source grid before the argmax. Masks
follow the wbc-seg convention: 0 background, 128 cytoplasm, 255 nucleus.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from smearscan.config import TilingConfig
from smearscan.errors import InputError
from smearscan.models.base import ModelSpec, calibrate_if_supported
from smearscan.resample import probabilities_to_source, resample_image, scale_factor
from smearscan.segmentation import segment_array

log = logging.getLogger(__name__)

NUCLEUS_CLASS = 3
CELL_CLASSES = (2, 3)
#: Grey levels of the wbc-seg masks: background, cytoplasm, nucleus.
MASK_LEVELS = (0, 128, 255)

# Source pixel sizes (um/px), estimated from the data:
# jiangxi (120x120): the median whole-cell equivalent diameter of the expert masks is
#   77 px for neutrophils (130 cells) and 58 px for lymphocytes (32); with 11 um and
#   8.5 um (DESIGN.md) both give 0.143-0.146 um/px; the RBCs around the cells are
#   ~45-50 px across (measured on the fields), 7.5 um / 50 px = 0.15 um/px.
# cellavision (300x300): the RBCs of the fields are ~70-75 px across (measured on the
#   fields; 7.5 um / 72 px ~ 0.10 um/px, the scale of CellaVision captures such as the
#   PBC fields of txl-pbc, where smearscan.scale gives 0.100-0.108). The WBC masks
#   (neutrophils 160 px, lymphocytes 141 px) would give 0.06-0.07: these cells look large
#   against the RBCs. The RBC ruler is the one DESIGN.md recommends, so it is used.
WBC_SEG_PIXEL_SIZE_UM: dict[str, float] = {"jiangxi": 0.15, "cellavision": 0.10}


@dataclass(frozen=True)
class MaskScore:
    """Dice scores of one image."""

    image: str
    nucleus_dice: float
    cell_dice: float


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two bool masks of equal shape (1.0 when both are empty)."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def snap_mask_levels(mask: np.ndarray, levels: tuple[int, ...] = MASK_LEVELS) -> np.ndarray:
    """Map every grey value of a uint8 ``(H, W)`` mask to the nearest of ``levels``."""
    table = np.array(levels, dtype=np.int16)
    index = np.abs(mask.astype(np.int16)[..., None] - table).argmin(axis=-1)
    return table[index].astype(np.uint8)


def segment_at_source(
    model: torch.nn.Module,
    rgb: np.ndarray,
    pixel_size_um: float,
    *,
    tiling: TilingConfig | None = None,
) -> np.ndarray:
    """Semantic class map of an image at its own resolution.

    Args:
        model: A segmenter (see :mod:`smearscan.models.base`).
        rgb: uint8 ``(H, W, 3)`` image.
        pixel_size_um: Its pixel size in µm/px.
        tiling: Engine tiling (defaults of :class:`TilingConfig`).

    Returns:
        uint8 ``(H, W)`` class indices.
    """
    spec: ModelSpec = model.spec  # type: ignore[assignment]
    s = scale_factor(pixel_size_um, spec.input_pixel_size_um)
    scaled = resample_image(rgb, s)
    calibrate_if_supported(model, scaled)
    probs = segment_array(scaled, model, tiling=tiling)
    back = probabilities_to_source(probs, s, rgb.shape[0], rgb.shape[1])
    return np.argmax(back, axis=0).astype(np.uint8)


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise InputError(path, "cannot be read as an image")
    return np.asarray(image)


def evaluate_mask_set(
    model: torch.nn.Module,
    folder: Path,
    pixel_size_um: float,
    *,
    limit: int | None = None,
) -> Iterator[MaskScore]:
    """Score a folder laid out as ``images/NAME.png`` + ``masks/NAME.png`` (wbc-seg).

    Args:
        model: The segmenter to score.
        folder: Folder holding ``images/`` and ``masks/``.
        pixel_size_um: Pixel size of the images.
        limit: Score only the first ``limit`` images (sorted by name).

    Yields:
        One :class:`MaskScore` per image.

    Raises:
        InputError: An image has no readable mask, or sizes differ.
    """
    for path in sorted((Path(folder) / "images").glob("*.png"))[:limit]:
        rgb = cv2.cvtColor(_read(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = snap_mask_levels(_read(Path(folder) / "masks" / path.name, cv2.IMREAD_GRAYSCALE))
        if mask.shape != rgb.shape[:2]:
            raise InputError(path, f"mask is {mask.shape}, image {rgb.shape[:2]}")
        pred = segment_at_source(model, rgb, pixel_size_um)
        yield MaskScore(
            image=path.name,
            nucleus_dice=dice(pred == NUCLEUS_CLASS, mask == 255),
            cell_dice=dice(np.isin(pred, CELL_CLASSES), mask >= 128),
        )
