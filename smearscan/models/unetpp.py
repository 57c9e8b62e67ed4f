"""UNet++ (Zhou, Rahman Siddiquee, Tajbakhsh & Liang 2018, "UNet++: A Nested U-Net
Architecture for Medical Image Segmentation").

Nodes ``X^{i,j}`` sit at level ``i`` (down-sampling ``2**i``) and column ``j``.
The backbone ``X^{i,0}`` is a U-Net encoder (two-convolution blocks, 2x2
max-pooling). Every other node is a two-convolution block on the concatenation
of all earlier nodes of its level, ``X^{i,0..j-1}`` (dense skip paths), and the
2x2 transposed-convolution up-sampling of ``X^{i+1,j-1}``. The top row
``X^{0,1}..X^{0,depth}`` are decoders of growing depth: with deep supervision
each gets a 1x1 head, otherwise only ``X^{0,depth}`` does. ``forward`` always
returns the deepest head, so the tiled engine sees a plain segmenter.
"""

from __future__ import annotations

import torch
from torch import nn

from smearscan.models.blocks import (
    Field,
    double_conv,
    layer_field,
    level_channels,
    up_conv,
)
from smearscan.models.network import SegmentationNet


class UNetPlusPlus(SegmentationNet):
    """UNet++ with ``depth`` levels below the top row; ``width * 2**i`` channels at level ``i``.

    Args:
        width: Channels of level 0.
        depth: Number of 2x down-samplings; input sides must be multiples of ``2**depth``.
        n_classes: Output channels ``C``.
        input_pixel_size_um: Scale the model works at (recorded in the spec).
        deep_supervision: One head per top-row node ``X^{0,1}..X^{0,depth}``.
        name: Model name for the spec (default ``"unetpp"``).
    """

    def __init__(
        self,
        *,
        width: int = 16,
        depth: int = 4,
        n_classes: int = 5,
        input_pixel_size_um: float = 0.25,
        deep_supervision: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(width, depth, n_classes)
        self.deep_supervision = deep_supervision
        ch = level_channels(width, depth)
        self.pool = nn.MaxPool2d(2)
        self.backbone = nn.ModuleList(
            [double_conv(3 if i == 0 else ch[i - 1], ch[i]) for i in range(depth + 1)]
        )
        # node X^{i,j}, j >= 1, is nodes[_key(i, j)] applied after ups[_key(i, j)]
        self.ups = nn.ModuleDict()
        self.nodes = nn.ModuleDict()
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                self.ups[_key(i, j)] = up_conv(ch[i + 1], ch[i])
                self.nodes[_key(i, j)] = double_conv((j + 1) * ch[i], ch[i])
        n_heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList([nn.Conv2d(ch[0], n_classes, 1) for _ in range(n_heads)])
        self.attach_spec("unetpp", name, input_pixel_size_um, deep_supervision=deep_supervision)

    def _top_row(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(N, 3, H, W)`` -> the top row ``X^{0,1}..X^{0,depth}``, each ``(N, width, H, W)``."""
        self.check_input(x)
        grid: list[list[torch.Tensor]] = []
        for i, block in enumerate(self.backbone):
            x = block(x if i == 0 else self.pool(x))
            grid.append([x])
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                up = self.ups[_key(i, j)](grid[i + 1][j - 1])
                grid[i].append(self.nodes[_key(i, j)](torch.cat([*grid[i], up], dim=1)))
        return grid[0][1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised RGB -> logits ``(N, C, H, W)`` of the deepest head."""
        out: torch.Tensor = self.heads[-1](self._top_row(x)[-1])
        return out

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits ``(N, C, H, W)`` of each head: ``depth`` with deep supervision, else one."""
        top = self._top_row(x)
        if not self.deep_supervision:
            return [self.heads[0](top[-1])]
        return [head(features) for head, features in zip(self.heads, top, strict=True)]

    def output_field(self) -> Field:
        """Support of one pixel of the deepest head, walking the graph of :meth:`_top_row`."""
        grid: list[list[Field]] = []
        f = Field()
        for i, block in enumerate(self.backbone):
            f = layer_field(block, f if i == 0 else layer_field(self.pool, f))
            grid.append([f])
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                up = layer_field(self.ups[_key(i, j)], grid[i + 1][j - 1])
                grid[i].append(layer_field(self.nodes[_key(i, j)], up.union(*grid[i])))
        return layer_field(self.heads[-1], grid[0][-1])


def _key(i: int, j: int) -> str:
    """ModuleDict key of node ``X^{i,j}``."""
    return f"x{i}_{j}"
