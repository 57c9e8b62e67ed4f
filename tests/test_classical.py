"""Tests of the classical stain-based segmenter."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from smearscan.models.base import SEMANTIC_CLASSES, Segmenter, calibrate_if_supported
from smearscan.segmenters import CLASSICAL_PIXEL_SIZE_UM, ClassicalSegmenter

REPO_ROOT = Path(__file__).resolve().parents[1]


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0


def _cellavision_mosaic(shared_data: Path) -> np.ndarray:
    """3x3 mosaic of cellavision fields at 0.25 um/px (360 x 360 px)."""
    folder = shared_data / "wbc-seg" / "cellavision" / "images"
    tiles = []
    for path in sorted(folder.glob("*.png"))[:9]:
        rgb = cv2.cvtColor(np.asarray(cv2.imread(str(path))), cv2.COLOR_BGR2RGB)
        tiles.append(cv2.resize(rgb, (120, 120), interpolation=cv2.INTER_AREA))
    return np.vstack([np.hstack(tiles[i : i + 3]) for i in range(0, 9, 3)])


def test_spec_and_interface() -> None:
    model = ClassicalSegmenter()
    assert isinstance(model, Segmenter)
    assert model.spec.input_pixel_size_um == CLASSICAL_PIXEL_SIZE_UM == 0.25
    assert model.spec.output == "probabilities"
    assert model.spec.classes == SEMANTIC_CLASSES
    # the halo must leave most of a tile for output
    assert 0 < model.spec.halo_px <= model.spec.tile_px // 4


def test_forward_uncalibrated_gives_probabilities() -> None:
    rgb = np.full((64, 48, 3), (235, 225, 215), np.uint8)
    cv2.circle(rgb, (24, 32), 12, (90, 50, 140), -1)
    out = ClassicalSegmenter()(_to_tensor(np.concatenate([rgb[None], rgb[None]])[0]))
    assert out.shape == (1, 5, 64, 48) and out.dtype == torch.float32
    torch.testing.assert_close(out.sum(1), torch.ones(1, 64, 48))
    assert out[0, 3, 32, 24] > 0.5  # nucleus in the middle of the purple disc


def test_crop_with_halo_equals_whole_image(shared_data: Path) -> None:
    image = _cellavision_mosaic(shared_data)
    model = ClassicalSegmenter()
    calibrate_if_supported(model, image)
    whole = model(_to_tensor(image))[0].argmax(0)
    halo = model.spec.halo_px
    for y0, x0, size in ((150, 150, 60), (0, 200, 50), (230, 10, 70)):
        cy0, cx0 = max(0, y0 - halo), max(0, x0 - halo)
        crop = image[cy0 : y0 + size + halo, cx0 : x0 + size + halo]
        part = model(_to_tensor(crop))[0].argmax(0)
        window = part[y0 - cy0 : y0 - cy0 + size, x0 - cx0 : x0 - cx0 + size]
        assert torch.equal(window, whole[y0 : y0 + size, x0 : x0 + size])
