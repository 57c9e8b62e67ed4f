"""ResUNet (Zhang, Liu & Wang 2018, "Road Extraction by Deep Residual U-Net").

A U-Net whose plain two-convolution blocks are replaced by pre-activation
residual units (BN -> activation -> 3x3 conv, twice, plus a shortcut). The
encoder down-samples with the stride-2 first convolution of each unit instead
of pooling; the last encoder unit is the bridge. The decoder up-samples by
nearest-neighbour 2x, concatenates the encoder features of the same level and
applies a residual unit; a 1x1 convolution gives the class logits. As asked
for smearscan, activations are LeakyReLU (slope 0.1) rather than ReLU.
"""

from __future__ import annotations

from torch import nn

from smearscan.models.blocks import ResidualBlock, level_channels
from smearscan.models.network import UShapedNet

ACTIVATION = "leaky_relu"


class ResUNet(UShapedNet):
    """ResUNet with ``depth`` stride-2 residual units and ``width * 2**level`` channels.

    Args:
        width: Channels of the first level.
        depth: Number of 2x down-samplings; input sides must be multiples of ``2**depth``.
        n_classes: Output channels ``C``.
        input_pixel_size_um: Scale the model works at (recorded in the spec).
        name: Model name for the spec (default ``"resunet"``).
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
        # the first unit sees the raw input: conv first, no BN/activation before it
        self.encoders = nn.ModuleList(
            [ResidualBlock(3, ch[0], act=ACTIVATION, activate_input=False)]
            + [
                ResidualBlock(ch[i - 1], ch[i], stride=2, act=ACTIVATION)
                for i in range(1, depth + 1)
            ]
        )
        self.ups = nn.ModuleList(
            [nn.Upsample(scale_factor=2, mode="nearest") for _ in range(depth)]
        )
        self.decoders = nn.ModuleList(
            [ResidualBlock(ch[i + 1] + ch[i], ch[i], act=ACTIVATION) for i in range(depth)]
        )
        # the units end on a conv: normalise and activate before the 1x1 head
        self.head = nn.Sequential(
            nn.BatchNorm2d(ch[0]),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(ch[0], n_classes, 1),
        )
        self.attach_spec("resunet", name, input_pixel_size_um, activation=ACTIVATION)
