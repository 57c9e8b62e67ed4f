"""Classical (no weights) stain-based segmenter of Romanowsky-stained smears.

The algorithm, per image at 0.25 um/px, with thresholds fixed per slide by
:func:`smearscan.stain.calibrate_stain`:

1. Colour features in optical density (:func:`smearscan.stain.stain_features`).
2. Stain mask: nucleus score above the slide threshold; opening then closing.
3. Its connected components: those fitting a 4 um box are platelets unless they lie
   within 2 um of a larger stain component (then they are nucleus lobes); larger
   components are WBC nuclei, with their small holes (pale chromatin) filled.
4. RBC-coloured regions: colour near the line from the background colour to the
   slide's typical RBC colour on the chroma plane (illumination-independent), not in a
   dense field of orange eosinophil granules; pale centres filled.
5. WBC cytoplasm: pixels within 7 um of a nucleus whose colour (averaged over 0.5 um)
   differs from the background's and that are darker than the local background, not
   RBC-coloured; closed and hole-filled together with the nucleus.
6. RBC: the RBC-coloured regions outside the WBCs; small specks dropped.

Every step has a bounded support and the size filters use bounding boxes (see
:mod:`smearscan.segmenters.morphology`), so the output on a window equals whole-image
output when the input extends :data:`CLASSICAL_HALO_PX` px beyond the window.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch

from smearscan.errors import ProcessingError
from smearscan.models.base import SEMANTIC_CLASSES, ModelSpec
from smearscan.segmenters import morphology as morph
from smearscan.stain import (
    DEFAULT_CALIBRATION,
    StainCalibration,
    StainFeatures,
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
CYTO_R = 28  # 7 um: cytoplasm extends at most this far from the nucleus
CYTO_OPEN_R = 1  # keeps the 1 um cytoplasm rim of lymphocytes
CYTO_CLOSE_R = 3
CELL_HOLE_SIDE = 24  # 6 um
CELL_HOLE_AREA = 300
RBC_OPEN_R = 2
RBC_HOLE_SIDE = 24  # 6 um: pale RBC centres
RBC_HOLE_AREA = 300
RBC_MIN_SIDE = 8  # 2 um: smaller foreground specks are not RBCs
RBC_MIN_AREA = 30

# Colour decisions on the chroma plane (eosin and blue relative to the background
# colour, see smearscan.stain), tuned on the synthetic sample fields and wbc-seg
# (benchmarks/cells_synthetic.py, benchmarks/classical_dice.py).
CHROMA_SIGMA = 2.0  # 0.5 um: colour averaged over granules before the decisions
CHROMA_R = 12  # support of that Gaussian (kernel 25 px)
#: Cytoplasm: colour at least this far (OD) from the background colour...
CYTO_CHROMA_MIN = 0.08
#: ...and darker than the local background (minimum over LOCAL_BG_R px, which follows
#: vignetting) by this much (OD): pale RBC ghosts of yellowish fields have some colour
#: but almost no density.
CYTO_DARK_MARGIN = 0.2
LOCAL_BG_R = 48  # 12 um: half-width of the local-background window
#: RBC colour: at least this far along the background -> typical-RBC colour line
#: (0 = background, 1 = the slide's typical RBC; pale centres are filled afterwards)...
RBC_ALONG_MIN = 0.35
#: ...and within this angle of that line (cosine): lilac, blue and purple cytoplasm
#: (45 degrees and more away on the synthetic stains) is not taken for an RBC.
RBC_COS_MIN = 0.9
#: Orange (eosinophil granule) pixels: eosin above ORANGE_EOSIN_MIN and blue above
#: ORANGE_SLOPE times the eosin. Where they are dense (ORANGE_DENSITY of the pixels
#: within ~2 um), nothing is an RBC: that is an eosinophil's cytoplasm.
ORANGE_EOSIN_MIN = 0.08
ORANGE_SLOPE = 0.3
ORANGE_SIGMA = 8.0
ORANGE_R = 24  # support of the orange-density Gaussian
ORANGE_DENSITY = 0.08

# Radius of spatial support of each step, in input pixels: a step's support is the
# largest support among its inputs plus its own reach. The output on a window equals
# whole-image output when the input extends CLASSICAL_HALO_PX beyond the window.
_NUCLEUS_SUPPORT = (  # nucleus and platelet masks
    FEATURE_RADIUS
    + 2 * STAIN_OPEN_R
    + 2 * STAIN_CLOSE_R
    + SPECK_MAX_SIDE
    + PLATELET_MAX_SIDE
    + LOBE_LINK_R
    + NUCLEUS_HOLE_SIDE
)
_RED_SUPPORT = (  # RBC-coloured regions
    FEATURE_RADIUS + max(ORANGE_R, CHROMA_R) + 2 * RBC_OPEN_R + RBC_HOLE_SIDE + RBC_MIN_SIDE
)
_STAINED_SUPPORT = max(
    CHROMA_R + max(_RED_SUPPORT, _NUCLEUS_SUPPORT),  # colour averaged outside RBCs/nuclei
    FEATURE_RADIUS + CHROMA_R + LOCAL_BG_R,  # darkness above the local background
)
_CYTO_SUPPORT = (
    max(_NUCLEUS_SUPPORT + CYTO_R, _STAINED_SUPPORT, _RED_SUPPORT)
    + 2 * CYTO_OPEN_R
    + 2 * CYTO_CLOSE_R
    + CELL_HOLE_SIDE
)
#: Radius of spatial support of the whole algorithm (the RBC class is last: it reads
#: the cytoplasm, nucleus and platelet masks, then drops small specks).
CLASSICAL_HALO_PX = max(_CYTO_SUPPORT, _NUCLEUS_SUPPORT + 1) + RBC_MIN_SIDE

#: Preferred tile side: with the 118 px halo, 1024 px tiles spend 59 % of their
#: pixels on output (512 px tiles 29 %); a batch of 8 stays under ~300 MB. A
#: 2592x1944 field at 0.1 um/px (1037x778 at this scale) is a single tile.
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


def _blur(image: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """Gaussian blur with a ``(2 radius + 1)``-px kernel (support ``radius``), mirrored edges."""
    size = 2 * radius + 1
    return cv2.GaussianBlur(image, (size, size), sigma, borderType=cv2.BORDER_REFLECT_101)


def _chroma(feats: StainFeatures, cal: StainCalibration) -> tuple[np.ndarray, np.ndarray]:
    """Eosin and blue relative to the background colour: float32 ``(H, W)`` each."""
    return (
        feats.eosin - np.float32(cal.background_eosin),
        feats.blue - np.float32(cal.background_blue),
    )


def _red_cells(eosin: np.ndarray, blue: np.ndarray, cal: StainCalibration) -> np.ndarray:
    """Solid RBC-coloured regions (pale centres filled), before WBCs are taken out.

    A pixel is RBC-coloured when its chroma (smoothed over 0.5 um) lies near the line
    from the background colour to the slide's typical RBC colour (within
    :data:`RBC_COS_MIN`), at least :data:`RBC_ALONG_MIN` of the way, and not in a
    dense field of orange eosinophil granules.

    Args:
        eosin: float32 ``(H, W)`` eosin relative to the background (:func:`_chroma`).
        blue: float32 ``(H, W)`` blue relative to the background.
        cal: Slide calibration (the typical RBC colour).

    Returns:
        Bool ``(H, W)`` mask.
    """
    orange = ((eosin > ORANGE_EOSIN_MIN) & (blue > ORANGE_SLOPE * eosin)).astype(np.float32)
    granular = _blur(orange, ORANGE_SIGMA, ORANGE_R) > ORANGE_DENSITY
    eosin = _blur(eosin, CHROMA_SIGMA, CHROMA_R)
    blue = _blur(blue, CHROMA_SIGMA, CHROMA_R)
    d_e, d_b = np.float32(cal.rbc_eosin), np.float32(cal.rbc_blue)
    dot = eosin * d_e + blue * d_b
    along = dot / (d_e * d_e + d_b * d_b)
    cos = dot / (np.hypot(eosin, blue) * np.hypot(d_e, d_b) + np.float32(1e-6))
    red = (along > RBC_ALONG_MIN) & (cos > RBC_COS_MIN) & ~granular
    red = morph.opening(red, RBC_OPEN_R)
    red = morph.fill_small_holes(red, RBC_HOLE_SIDE, RBC_HOLE_AREA)
    return morph.remove_small(red, RBC_MIN_SIDE, RBC_MIN_AREA)


def _local_background(darkness: np.ndarray) -> np.ndarray:
    """Darkness of the local background: the minimum within :data:`LOCAL_BG_R` px.

    Follows uneven illumination (vignetting) that a slide-wide level cannot; the
    square window (separable, fast) reaches past the largest WBC.
    """
    size = 2 * LOCAL_BG_R + 1
    return cv2.erode(darkness, np.ones((size, size), np.uint8), borderType=cv2.BORDER_REFLECT_101)


def _cytoplasm(
    nucleus: np.ndarray,
    red: np.ndarray,
    chroma: np.ndarray,
    darkness: np.ndarray,
    cal: StainCalibration,
) -> np.ndarray:
    """WBC cytoplasm: stained pixels within :data:`CYTO_R` of a nucleus, not in an RBC.

    "Stained" means a colour away from the background's, averaged over 0.5 um of the
    pixels that are neither RBC nor nucleus (so granules count and an RBC's colour
    does not bleed into the background around it), and darker than the local
    background.

    Args:
        nucleus: bool ``(H, W)`` nucleus mask.
        red: bool ``(H, W)`` RBC-coloured regions (:func:`_red_cells`).
        chroma: float32 ``(H, W)`` distance from the background colour on the chroma
            plane (OD).
        darkness: float32 ``(H, W)`` summed optical density.
        cal: Slide calibration.

    Returns:
        Bool ``(H, W)`` cytoplasm mask (disjoint from ``nucleus``).
    """
    free = (~(red | nucleus)).astype(np.float32)
    num = _blur(chroma * free, CHROMA_SIGMA, CHROMA_R)
    den = _blur(free, CHROMA_SIGMA, CHROMA_R)
    stained = num > CYTO_CHROMA_MIN * np.maximum(den, np.float32(1e-3))
    darkness = _blur(darkness, CHROMA_SIGMA, CHROMA_R)
    stained &= darkness - _local_background(darkness) > CYTO_DARK_MARGIN
    cyto = morph.dilate(nucleus, CYTO_R) & stained & ~nucleus
    if cal.rbc_source != "default":
        # RBC colour measured on this slide: RBC-coloured pixels are not cytoplasm. With
        # the default colour (samples without RBCs away from the WBCs, e.g. single-cell
        # crops) a pink neutrophil cytoplasm may match it, so it is not used here.
        cyto &= ~red
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
    eosin, blue = _chroma(feats, cal)
    red = _red_cells(eosin, blue, cal)
    cyto = _cytoplasm(nucleus, red, np.hypot(eosin, blue), feats.darkness, cal)
    rbc = red & ~(nucleus | cyto | morph.dilate(platelet, 1))
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
        self.calibration = calibrate_stain(sample, CLASSICAL_PIXEL_SIZE_UM)
        logger.debug("classical segmenter calibrated (%s)", self.calibration.source)

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
