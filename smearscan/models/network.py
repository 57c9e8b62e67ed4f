"""The base of smearscan's trained segmentation networks and their U-shaped skeleton.

:class:`SegmentationNet` checks ``width``/``depth``, builds the
:class:`~smearscan.models.base.ModelSpec` from the receptive field computed
over the network's own layers (so the engine's halo always covers it) and
offers ``forward_heads`` for training code. :class:`UShapedNet` is the
encoder-decoder skeleton shared by U-Net, ResUNet and V-Net.
"""

from __future__ import annotations

import torch
from torch import nn

from smearscan.errors import ModelError
from smearscan.models.base import SEMANTIC_CLASSES, ModelSpec
from smearscan.models.blocks import Field, layer_field

#: Allowed network depths (number of 2x down-samplings).
MAX_DEPTH = 6


def check_shape_args(width: int, depth: int, n_classes: int) -> None:
    """Raise :class:`ModelError` unless ``width >= 1``, ``1 <= depth <= 6``, ``n_classes >= 1``."""
    for label, value, low, high in (
        ("width", width, 1, None),
        ("depth", depth, 1, MAX_DEPTH),
        ("n_classes", n_classes, 1, None),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(f"{label} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise ModelError(f"{label} must be {bounds}, got {value}")


class SegmentationNet(nn.Module):
    """Base of the trained architectures: spec, receptive field, uniform heads.

    Subclasses build their layers, implement :meth:`forward` and
    :meth:`output_field` (walking the same graph as ``forward`` with
    :class:`Field` s), then call :meth:`attach_spec` last.
    """

    spec: ModelSpec

    def __init__(self, width: int, depth: int, n_classes: int) -> None:
        check_shape_args(width, depth, n_classes)
        super().__init__()
        self.width = width
        self.depth = depth
        self.n_classes = n_classes

    def output_field(self) -> Field:  # pragma: no cover - abstract
        """Support of one output pixel (``jump`` 1), computed from the layers."""
        raise NotImplementedError

    def receptive_field_px(self) -> int:
        """Theoretical receptive field in input pixels, odd: ``2 * radius + 1``.

        The width of the smallest window centred on an output pixel that holds
        every input pixel it can depend on, whatever its position on the
        pooling grid (the support itself may be narrower and off-centre).
        """
        return 2 * self.output_field().radius + 1

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every supervised output, each ``(N, C, H, W)`` logits; here only ``forward(x)``."""
        return [self(x)]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`ModelError` unless ``x`` is ``(N, 3, H, W)`` on the ``2**depth`` grid."""
        m = 2**self.depth
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % m or x.shape[3] % m:
            raise ModelError(
                f"{self.spec.name} expects (N, 3, H, W) input with H and W multiples of {m}, "
                f"got {tuple(x.shape)}"
            )

    def attach_spec(
        self, arch: str, name: str | None, input_pixel_size_um: float, **extra: object
    ) -> None:
        """Build ``self.spec``; ``halo_px`` covers the receptive field, on the pooling grid."""
        if not input_pixel_size_um > 0:
            raise ModelError(f"input_pixel_size_um must be > 0, got {input_pixel_size_um}")
        field = self.output_field()
        multiple = 2**self.depth
        receptive_field = 2 * field.radius + 1
        halo = -(-((receptive_field + 1) // 2) // multiple) * multiple
        # Tiles of at least 4 halos keep the context overhead reasonable; 1024 holds a
        # 2592 x 1944 camera field at 0.1 µm/px (1037 x 778 at 0.25 µm/px) in one tile or
        # two, where 512 needed 6 tiles of 2.5x the pixels each (5.1 s against 11.0 s on 2
        # CPU cores, ResUNet width 8).
        tile = max(1024, -(-4 * halo // multiple) * multiple)
        classes = (
            SEMANTIC_CLASSES
            if self.n_classes == len(SEMANTIC_CLASSES)
            else tuple(f"class{i}" for i in range(self.n_classes))
        )
        self.spec = ModelSpec(
            name=name or arch,
            architecture=arch,
            input_pixel_size_um=float(input_pixel_size_um),
            halo_px=halo,
            classes=classes,
            size_multiple=multiple,
            output="logits",
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            tile_px=tile,
            extra={
                "width": self.width,
                "depth": self.depth,
                "receptive_field_px": receptive_field,
                **extra,
            },
        )


class UShapedNet(SegmentationNet):
    """A U-shaped encoder-decoder; subclasses set the four module attributes below.

    ``encoders[0]`` maps the input to level 0 and ``encoders[i]`` level ``i - 1``
    to level ``i`` (down-sampling included); ``ups[i]`` maps level ``i + 1`` to
    level ``i``; ``decoders[i]`` takes the concatenation ``[skip_i, ups[i](...)]``
    and ``head`` the level-0 features to logits.
    """

    encoders: nn.ModuleList
    ups: nn.ModuleList
    decoders: nn.ModuleList
    head: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised RGB -> logits ``(N, C, H, W)``."""
        self.check_input(x)
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        x = skips.pop()  # the bottleneck, (N, width * 2**depth, H / 2**depth, W / 2**depth)
        for level in reversed(range(self.depth)):
            x = self.decoders[level](torch.cat([skips[level], self.ups[level](x)], dim=1))
        out: torch.Tensor = self.head(x)
        return out

    def output_field(self) -> Field:
        """Support of one output pixel, walking the same graph as :meth:`forward`."""
        skips: list[Field] = []
        f = Field()
        for encoder in self.encoders:
            f = layer_field(encoder, f)
            skips.append(f)
        f = skips.pop()
        for level in reversed(range(self.depth)):
            up = layer_field(self.ups[level], f)
            f = layer_field(self.decoders[level], skips[level].union(up))
        return layer_field(self.head, f)
