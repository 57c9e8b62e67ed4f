"""Classical (no weights) stain-based segmenter of Romanowsky-stained smears.

The algorithm, per image at 0.25 um/px, with thresholds fixed per slide by
:func:`smearscan.stain.calibrate_stain`:

1. Colour features in optical density (:func:`smearscan.stain.stain_features`).
2. Stain mask: nucleus score above the slide threshold; opening then closing.
3. Its connected components: those fitting a 4 um box are platelets unless they lie
   within 2 um of a larger stain component (then they are nucleus lobes); larger
   components are WBC nuclei, with their small holes (pale chromatin) filled.
4. WBC cytoplasm: stained (not background-pale), not RBC-pink foreground within 5 um of
   a nucleus; closed and hole-filled together with the nucleus.
5. RBC: the remaining foreground with its pale centres filled; small specks dropped.

Every step has a bounded support and the size filters use bounding boxes (see
:mod:`smearscan.segmenters.morphology`), so the output on a window equals whole-image
output when the input extends :data:`CLASSICAL_HALO_PX` px beyond the window.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from smearscan.errors import ProcessingError
from smearscan.models.base import SEMANTIC_CLASSES, ModelSpec
from smearscan.segmenters import morphology as morph
from smearscan.stain import (
    DEFAULT_CALIBRATION,
    StainCalibration,
    calibrate_stain,
    check_rgb,
    stain_features,
)

logger = logging.getLogger(__name__)

#: Input scale of the classical segmenter, micrometres per pixel.
CLASSICAL_PIXEL_SIZE_UM = 0.25

BACKGROUND, RBC, WBC_CYTOPLASM, WBC_NUCLEUS, PLATELET = range(5)

# Geometry, in input pixels at 0.25 um/px (4 px = 1 um).
FEATURE_RADIUS = 1  # 3x3 Gaussian of stain_features
STAIN_OPEN_R = 1
STAIN_CLOSE_R = 2
PLATELET_MAX_SIDE = 16  # 4 um: a stain component fitting this box is platelet-sized
PLATELET_MAX_AREA = 200  # 12.5 um^2
SPECK_MAX_SIDE = 3  # < 1 um: noise
SPECK_MAX_AREA = 6
LOBE_LINK_R = 8  # 2 um: a small stain blob this close to a nucleus is a lobe of it
NUCLEUS_HOLE_SIDE = 16  # 4 um: pale chromatin holes filled in nuclei
NUCLEUS_HOLE_AREA = 120
CYTO_R = 20  # 5 um: cytoplasm extends at most this far from the nucleus
CYTO_OPEN_R = 2
CYTO_CLOSE_R = 3
CELL_HOLE_SIDE = 24  # 6 um
CELL_HOLE_AREA = 300
RBC_HOLE_SIDE = 24  # 6 um: pale RBC centres
RBC_HOLE_AREA = 300
RBC_MIN_SIDE = 8  # 2 um: smaller foreground specks are not RBCs
RBC_MIN_AREA = 30
#: Eosin feature (OD_G - OD_R, absolute, not relative to the background) above which
#: foreground next to a nucleus is taken for a pink RBC rather than WBC cytoplasm.
#: Fixed on purpose: a threshold relative to the calibrated background eosin (median
#: over Otsu's background class; ~0.0 on jiangxi, ~0.13 on cellavision) was measured with
#: benchmarks/classical_dice.py, whole-cell Dice jiangxi / cellavision: fixed 0.3 gives
#: 0.726 / 0.800; background + 0.2, + 0.25, + 0.3 give 0.664 / 0.782, 0.706 / 0.765,
#: 0.751 / 0.742; halfway-type levels between the background and the RBC eosin (median
#: over stained non-nucleus pixels) gave 0.59-0.68 / 0.73-0.79, since on single-WBC
#: fields that median is mostly WBC cytoplasm. Nucleus Dice is unaffected (0.908 / 0.913).
RBC_EOSIN_THRESHOLD = 0.3

#: Radius of spatial support of the whole algorithm, in input pixels: the sum of the
#: supports of the chained steps (smoothing, stain cleaning, component size filter and
#: lobe linking, nucleus hole filling, cytoplasm growth, opening/closing and filling,
#: and the RBC specks filter, whose decision reads the WBC mask).
CLASSICAL_HALO_PX = (
    FEATURE_RADIUS
    + 2 * STAIN_OPEN_R
    + 2 * STAIN_CLOSE_R
    + PLATELET_MAX_SIDE
    + LOBE_LINK_R
    + NUCLEUS_HOLE_SIDE
    + CYTO_R
    + 2 * CYTO_OPEN_R
    + 2 * CYTO_CLOSE_R
    + CELL_HOLE_SIDE
    + RBC_MIN_SIDE
)

#: Preferred tile side: with a 109 px halo, 1024 px tiles spend 57 % of their
#: pixels on output (512 px tiles only 26 %); a batch of 8 stays under ~250 MB.
CLASSICAL_TILE_PX = 1024

#: Probability mass spread over the other classes (soft one-hot memberships).
LABEL_SMOOTHING = 0.04


def _nuclei_and_platelets(
    score: np.ndarray, darkness: np.ndarray, cal: StainCalibration
) -> tuple[np.ndarray, np.ndarray]:
    """Split the nucleus-stain mask into WBC nuclei and platelets.

    Args:
        score: float32 ``(H, W)`` nucleus score.
        darkness: float32 ``(H, W)`` summed optical density.
        cal: Slide calibration.

    Returns:
        Bool ``(H, W)`` masks ``(nucleus, platelet)``.
    """
    stain = (score > cal.nucleus_threshold) & (darkness > cal.cyto_threshold)
    stain = morph.closing(morph.opening(stain, STAIN_OPEN_R), STAIN_CLOSE_R)
    stain = morph.remove_small(stain, SPECK_MAX_SIDE, SPECK_MAX_AREA)
    labels, stats = morph.component_stats(stain)
    small_ids = morph.small_component_ids(stats, PLATELET_MAX_SIDE, PLATELET_MAX_AREA)
    small = small_ids[labels]
    near_large = morph.dilate(stain & ~small, LOBE_LINK_R)
    # A small component is a lobe when any of its pixels is near a large component.
    lobe_ids = np.bincount(labels[small & near_large], minlength=len(stats)) > 0
    lobe = lobe_ids[labels]
    nucleus = (stain & ~small) | lobe
    nucleus = morph.fill_small_holes(nucleus, NUCLEUS_HOLE_SIDE, NUCLEUS_HOLE_AREA)
    platelet = small & ~lobe
    return nucleus, platelet


def _cytoplasm(
    nucleus: np.ndarray, darkness: np.ndarray, eosin: np.ndarray, cal: StainCalibration
) -> np.ndarray:
    """WBC cytoplasm: stained, non-pink pixels within :data:`CYTO_R` of a nucleus.

    Args:
        nucleus: bool ``(H, W)`` nucleus mask.
        darkness: float32 ``(H, W)`` summed optical density.
        eosin: float32 ``(H, W)`` eosin feature ``OD_G - OD_R``.
        cal: Slide calibration.

    Returns:
        Bool ``(H, W)`` cytoplasm mask (disjoint from ``nucleus``).
    """
    stained = darkness > cal.cyto_threshold
    pink = eosin > RBC_EOSIN_THRESHOLD
    cyto = morph.dilate(nucleus, CYTO_R) & stained & ~pink & ~nucleus
    cyto = morph.opening(cyto, CYTO_OPEN_R)
    cell = morph.closing(cyto | nucleus, CYTO_CLOSE_R)
    cell = morph.fill_small_holes(cell, CELL_HOLE_SIDE, CELL_HOLE_AREA)
    return cell & ~nucleus


def segment_labels(rgb: np.ndarray, cal: StainCalibration) -> np.ndarray:
    """Semantic map of one image.

    Args:
        rgb: RGB uint8 ``(H, W, 3)`` at :data:`CLASSICAL_PIXEL_SIZE_UM` um/px.
        cal: Slide calibration.

    Returns:
        uint8 ``(H, W)`` class indices of :data:`SEMANTIC_CLASSES`.
    """
    feats = stain_features(rgb)
    nucleus, platelet = _nuclei_and_platelets(feats.nucleus_score, feats.darkness, cal)
    cyto = _cytoplasm(nucleus, feats.darkness, feats.eosin, cal)
    fg = morph.fill_small_holes(feats.darkness > cal.fg_threshold, RBC_HOLE_SIDE, RBC_HOLE_AREA)
    rbc = fg & ~(nucleus | cyto | morph.dilate(platelet, 1))
    rbc = morph.remove_small(rbc, RBC_MIN_SIDE, RBC_MIN_AREA)
    labels = np.zeros(rgb.shape[:2], np.uint8)
    labels[rbc] = RBC
    labels[cyto] = WBC_CYTOPLASM
    labels[nucleus] = WBC_NUCLEUS
    labels[platelet] = PLATELET
    return labels


def labels_to_probabilities(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Soft one-hot memberships of a label map.

    Args:
        labels: uint8 ``(H, W)`` class indices.
        n_classes: Number of classes ``C``.

    Returns:
        float32 ``(C, H, W)``, ``1 - LABEL_SMOOTHING`` on the label, the rest spread
        evenly, summing to 1 per pixel.
    """
    table = np.full((n_classes, n_classes), LABEL_SMOOTHING / (n_classes - 1), np.float32)
    np.fill_diagonal(table, 1.0 - LABEL_SMOOTHING)
    return table[:, labels]


class ClassicalSegmenter(torch.nn.Module):
    """Stain-based segmenter behind the :class:`~smearscan.models.base.Segmenter` interface.

    Attributes:
        spec: Its :class:`ModelSpec` (0.25 um/px, probabilities, halo
            :data:`CLASSICAL_HALO_PX`).
        calibration: The slide's :class:`StainCalibration`, or ``None`` before
            :meth:`calibrate` (then built-in defaults are used).
    """

    def __init__(self) -> None:
        super().__init__()
        self.spec = ModelSpec(
            name="classical",
            architecture="classical",
            input_pixel_size_um=CLASSICAL_PIXEL_SIZE_UM,
            halo_px=CLASSICAL_HALO_PX,
            classes=SEMANTIC_CLASSES,
            size_multiple=1,
            output="probabilities",
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            tile_px=CLASSICAL_TILE_PX,
            input="uint8",
        )
        self.calibration: StainCalibration | None = None

    def calibrate(self, sample: np.ndarray) -> None:
        """Fix the slide-level stain statistics.

        Args:
            sample: RGB uint8 ``(H, W, 3)`` sample of the whole slide at 0.25 um/px.

        Raises:
            ProcessingError: When ``sample`` is not an RGB uint8 image.
        """
        self.calibration = calibrate_stain(sample)
        logger.info("classical segmenter calibrated (%s)", self.calibration.source)

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """Semantic map of one RGB uint8 ``(H, W, 3)`` image: uint8 ``(H, W)``."""
        check_rgb(rgb)
        rgb = np.ascontiguousarray(rgb)
        cal = self.calibration
        if cal is None:
            logger.debug("classical segmenter not calibrated; using default stain statistics")
            cal = DEFAULT_CALIBRATION
        return segment_labels(rgb, cal)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            x: ``(N, 3, H, W)`` RGB at 0.25 um/px: uint8 (what the engine sends), or
                float in [0, 1].

        Returns:
            float32 ``(N, 5, H, W)`` class probabilities on ``x.device``.

        Raises:
            ProcessingError: When ``x`` is not ``(N, 3, H, W)``.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ProcessingError(
                "segment", f"expected a (N, 3, H, W) tensor, got shape {tuple(x.shape)}"
            )
        if x.dtype == torch.uint8:  # what the engine sends (spec.input == "uint8")
            images = x.detach()
        else:
            images = x.detach().float().mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)
        images_np = images.permute(0, 2, 3, 1).cpu().numpy()
        n_classes = self.spec.n_classes
        out = np.empty((len(images_np), n_classes, *images_np.shape[1:3]), np.float32)
        for i, img in enumerate(images_np):
            out[i] = labels_to_probabilities(self.segment(img), n_classes)
        return torch.from_numpy(out).to(x.device)
