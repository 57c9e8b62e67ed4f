"""A deliberately small two-level U-Net for exercising the tiled engine.

It has everything that makes tiling hard for a real segmentation network
(3x3 convolutions with zero padding, max-pooling, upsampling and a skip
connection) at a fraction of the cost, so the engine can be tested and
benchmarked against whole-image inference without trained weights. It is
not a segmentation model for smears: weights are random (seeded).
"""

from __future__ import annotations

import torch
from torch import nn

from smearscan.models.base import SEMANTIC_CLASSES, ModelSpec


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """Encoder (2 convs) -> pool -> 2 convs -> upsample -> concat skip -> conv -> 1x1.

    Receptive field: 2 + 2 px from the first convolutions, then 2 convolutions
    at half resolution (+8 px), the decoder 3x3 (+2 px) and pooling alignment:
    at most 17 px wide, so a halo of 16 px is ample.

    Args:
        width: Channels of the first level (the second has twice as many).
        seed: Seed of the random weights.
    """

    def __init__(self, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.enc1 = _block(3, width)
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), _block(width, 2 * width))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = nn.Sequential(
            nn.Conv2d(3 * width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, len(SEMANTIC_CLASSES), 1),
        )
        torch.random.set_rng_state(generator_state)
        self.spec = ModelSpec(
            name="tiny-unet",
            architecture="unet",
            input_pixel_size_um=0.25,
            halo_px=16,
            size_multiple=2,
            output="logits",
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> logits ``(N, 5, H, W)``; ``H`` and ``W`` even."""
        skip = self.enc1(x)
        return self.dec(torch.cat([skip, self.up(self.enc2(skip))], dim=1))
