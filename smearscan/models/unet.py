"""U-Net (Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for
Biomedical Image Segmentation").

An encoder of two-convolution blocks separated by 2x2 max-pooling, mirrored by
a decoder that up-samples with 2x2 transposed convolutions, concatenates the
encoder features of the same level (skip connections) and applies another
two-convolution block; a 1x1 convolution gives the class logits. Unlike the
paper, convolutions are zero-padded (output size equals input size) and
followed by BatchNorm.

The encoder-decoder skeleton and the spec come from :mod:`smearscan.models.network`.
"""

from __future__ import annotations

from torch import nn

from smearscan.models.blocks import double_conv, level_channels, up_conv
from smearscan.models.network import UShapedNet


class UNet(UShapedNet):
    """U-Net with ``depth`` poolings and ``width * 2**level`` channels per level.

    Args:
        width: Channels of the first level.
        depth: Number of 2x down-samplings; input sides must be multiples of ``2**depth``.
        n_classes: Output channels ``C``.
        input_pixel_size_um: Scale the model works at (recorded in the spec).
        name: Model name for the spec (default ``"unet"``).
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
            [double_conv(3, ch[0])]
            + [
                nn.Sequential(nn.MaxPool2d(2), double_conv(ch[i - 1], ch[i]))
                for i in range(1, depth + 1)
            ]
        )
        self.ups = nn.ModuleList([up_conv(ch[i + 1], ch[i]) for i in range(depth)])
        self.decoders = nn.ModuleList([double_conv(2 * ch[i], ch[i]) for i in range(depth)])
        self.head = nn.Conv2d(ch[0], n_classes, 1)
        self.attach_spec("unet", name, input_pixel_size_um)
