"""2D V-Net (Milletari, Navab & Ahmadi 2016, "V-Net: Fully Convolutional Neural
Networks for Volumetric Medical Image Segmentation"), adapted to 2D images.

Every level is a residual stage of 1, 2 or 3 convolutions (conv -> BN -> PReLU,
the stage input added before the last PReLU). Down-sampling is a learned 2x2
stride-2 convolution that doubles the channels (no pooling); up-sampling is a
2x2 stride-2 transposed convolution that halves them. Decoder stages work on
the concatenation of the up-sampled features and the encoder stage of the same
level (shortcut: 1x1 conv). A 1x1 convolution gives the class logits.

Differences from the paper: 3x3 instead of 5x5 kernels (the paper's 5x5
triples the receptive field and hence the tile halo) and BatchNorm.
"""

from __future__ import annotations

from torch import nn

from smearscan.models.blocks import (
    ResidualBlock,
    activation,
    conv_bn_act,
    level_channels,
    up_conv,
)
from smearscan.models.network import UShapedNet

ACTIVATION = "prelu"


def stage_convs(level: int) -> int:
    """Convolutions in the residual stage of ``level``: 1, 2, then 3 (as in the paper)."""
    return min(level + 1, 3)


def _stage(c_in: int, c_out: int, level: int) -> ResidualBlock:
    return ResidualBlock(
        c_in, c_out, n_convs=stage_convs(level), act=ACTIVATION, preactivation=False
    )


class VNet(UShapedNet):
    """2D V-Net with ``depth`` strided down-samplings and ``width * 2**level`` channels.

    Args:
        width: Channels of the first level.
        depth: Number of 2x down-samplings; input sides must be multiples of ``2**depth``.
        n_classes: Output channels ``C``.
        input_pixel_size_um: Scale the model works at (recorded in the spec).
        name: Model name for the spec (default ``"vnet"``).
    """

    def __init__(
        self,
        *,
        width: int = 16,
        depth: int = 4,
        n_classes: int = 5,
        input_pixel_size_um: float = 0.25,
        name: str | None = None,
    ) -> None:
        super().__init__(width, depth, n_classes)
        ch = level_channels(width, depth)
        self.encoders = nn.ModuleList(
            [_stage(3, ch[0], 0)]
            + [
                nn.Sequential(
                    conv_bn_act(ch[i - 1], ch[i], kernel=2, stride=2, act=ACTIVATION),
                    _stage(ch[i], ch[i], i),
                )
                for i in range(1, depth + 1)
            ]
        )
        self.ups = nn.ModuleList(
            [
                nn.Sequential(
                    up_conv(ch[i + 1], ch[i]), nn.BatchNorm2d(ch[i]), activation(ACTIVATION, ch[i])
                )
                for i in range(depth)
            ]
        )
        self.decoders = nn.ModuleList([_stage(2 * ch[i], ch[i], i) for i in range(depth)])
        self.head = nn.Conv2d(ch[0], n_classes, 1)
        self.attach_spec("vnet", name, input_pixel_size_um, activation=ACTIVATION)
