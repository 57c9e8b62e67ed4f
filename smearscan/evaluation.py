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
from smearscan.datasets import map_grey_levels
from smearscan.errors import InputError
from smearscan.metrics import dice_score as dice
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


def snap_mask_levels(mask: np.ndarray, levels: tuple[int, ...] = MASK_LEVELS) -> np.ndarray:
    """Map every grey value of a uint8 ``(H, W)`` mask to the nearest of ``levels``."""
    return map_grey_levels(mask, {level: level for level in levels})


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


@dataclass(frozen=True)
class InstanceScore:
    """How a set of predicted instances matches the true ones.

    Attributes:
        matches: ``(truth_id, pred_id, iou)`` of every matched pair, in truth order.
        missed: Truth ids with no prediction overlapping at ``min_iou``.
        extra: Predicted ids matched to no truth.
    """

    matches: list[tuple[int, int, float]]
    missed: list[int]
    extra: list[int]

    @property
    def ious(self) -> np.ndarray:
        """float64 ``(n_matches,)`` IoU of each match."""
        return np.array([m[2] for m in self.matches], np.float64)


def match_instances(truth: np.ndarray, pred: np.ndarray, *, min_iou: float = 0.5) -> InstanceScore:
    """One-to-one matching of two instance label images by IoU.

    With ``min_iou >= 0.5`` a truth instance can overlap at most one prediction at
    that level, so the greedy highest-IoU-first matching is optimal.

    Args:
        truth: int ``(H, W)`` true labels (0 = background).
        pred: int ``(H, W)`` predicted labels, same shape.
        min_iou: Smallest IoU that counts as a match.

    Returns:
        The matches, the missed truth ids and the extra predicted ids.
    """
    if truth.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {truth.shape} vs {pred.shape}")
    t = truth.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    t_ids, t_area = np.unique(t[t > 0], return_counts=True)
    p_ids, p_area = np.unique(p[p > 0], return_counts=True)
    both = (t > 0) & (p > 0)
    pairs, inter = np.unique(np.stack([t[both], p[both]]), axis=1, return_counts=True)
    t_size = dict(zip(t_ids.tolist(), t_area.tolist(), strict=True))
    p_size = dict(zip(p_ids.tolist(), p_area.tolist(), strict=True))
    candidates = sorted(
        (
            (n / (t_size[a] + p_size[b] - n), a, b)
            for (a, b), n in zip(pairs.T.tolist(), inter.tolist(), strict=True)
        ),
        reverse=True,
    )
    used_t: set[int] = set()
    used_p: set[int] = set()
    matches = []
    for iou, a, b in candidates:
        if iou < min_iou:
            break
        if a in used_t or b in used_p:
            continue
        used_t.add(a)
        used_p.add(b)
        matches.append((a, b, iou))
    matches.sort()
    missed = [int(i) for i in t_ids if int(i) not in used_t]
    extra = [int(i) for i in p_ids if int(i) not in used_p]
    return InstanceScore(matches, missed, extra)
