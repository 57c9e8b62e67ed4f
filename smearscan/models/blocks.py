"""Building blocks shared by the U-Net family, and their receptive-field arithmetic.

The blocks are plain ``nn.Module`` s (conv + BatchNorm + activation, the
two-conv U-Net block, residual blocks, up-sampling). A :class:`Field` carried
through a model's layer graph (``layer_field`` along chains, ``Field.union``
where branches meet) gives the support of an output pixel, so each
architecture derives its receptive field and halo from its own layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Field:
    """Input pixels a feature-map pixel can depend on, along one axis.

    Pixel ``q`` of a map whose stride is ``jump`` input pixels depends only on
    input pixels ``[q * jump + lo, q * jump + hi]`` (square kernels: one axis
    describes both). The rules are upper bounds, attained over the positions
    of a pixel on the pooling grid.
    """

    lo: int = 0
    hi: int = 0
    jump: int = 1

    @property
    def width(self) -> int:
        """Full width of the support in input pixels."""
        return self.hi - self.lo + 1

    @property
    def radius(self) -> int:
        """Largest distance from the pixel to a pixel of its support (either side)."""
        return max(-self.lo, self.hi)

    def conv(self, kernel: int, stride: int = 1, padding: int | None = None) -> Field:
        """After a convolution or pooling window of ``kernel`` / ``stride`` / ``padding``."""
        pad = (kernel - 1) // 2 if padding is None else padding
        j = self.jump
        return Field(self.lo - pad * j, self.hi + (kernel - 1 - pad) * j, j * stride)

    def up(self, kernel: int, stride: int, padding: int = 0) -> Field:
        """After a transposed convolution (nearest up-sampling: ``kernel == stride``)."""
        if self.jump % stride:
            raise ValueError(f"cannot up-sample a map of stride {self.jump} by {stride}")
        j = self.jump // stride
        return Field(self.lo + (padding - kernel + 1) * j, self.hi + padding * j, j)

    def union(self, *others: Field) -> Field:
        """Support of a pixel combining maps of the same stride (concatenation, sum)."""
        if any(o.jump != self.jump for o in others):
            raise ValueError("cannot merge feature maps of different strides")
        return Field(
            min(self.lo, *(o.lo for o in others)), max(self.hi, *(o.hi for o in others)), self.jump
        )


_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.Dropout2d)


def _pair(value: int | tuple[int, ...] | str) -> int:
    """The single size of a square kernel / stride / padding argument."""
    if isinstance(value, str):
        raise TypeError(f"padding {value!r} is not supported by the receptive-field walk")
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"non-square layer parameter {value}")
    return int(value[0])


def layer_field(module: nn.Module, field: Field) -> Field:
    """``field`` after ``module``: a block with a ``field`` method or a chain of known layers.

    Raises:
        TypeError: A layer whose effect on the support is unknown (never guessed).
    """
    custom = getattr(module, "field", None)
    if callable(custom):
        result: Field = custom(field)
        return result
    if isinstance(module, nn.Sequential):
        for child in module:
            field = layer_field(child, field)
        return field
    if isinstance(module, nn.Conv2d | nn.MaxPool2d):
        if _pair(module.dilation) != 1:
            raise TypeError("dilated layers are not supported by the receptive-field walk")
        return field.conv(_pair(module.kernel_size), _pair(module.stride), _pair(module.padding))
    if isinstance(module, nn.ConvTranspose2d):
        return field.up(_pair(module.kernel_size), _pair(module.stride), _pair(module.padding))
    if isinstance(module, nn.Upsample) and module.mode == "nearest":
        factor = module.scale_factor
        if not isinstance(factor, int | float) or int(factor) != factor:
            raise TypeError("nearest up-sampling needs one integer scale factor")
        return field.up(int(factor), int(factor))
    if isinstance(module, _POINTWISE):
        return field
    raise TypeError(f"unknown receptive field of layer {type(module).__name__}")


def activation(kind: str, channels: int) -> nn.Module:
    """``relu``, ``leaky_relu`` (slope 0.1), ``prelu`` (one slope per channel) or ``none``."""
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=True)
    if kind == "prelu":
        return nn.PReLU(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {kind!r}")


def conv_bn_act(
    c_in: int, c_out: int, kernel: int = 3, stride: int = 1, act: str = "relu"
) -> nn.Sequential:
    """Conv (no bias, zero padding ``(kernel - 1) // 2``) -> BatchNorm -> activation.

    ``(N, c_in, H, W)`` -> ``(N, c_out, H / stride, W / stride)``.
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
        nn.BatchNorm2d(c_out),
        activation(act, c_out),
    )


def double_conv(c_in: int, c_out: int, act: str = "relu") -> nn.Sequential:
    """The U-Net block: two 3x3 conv-BN-act, ``(N, c_in, H, W)`` -> ``(N, c_out, H, W)``."""
    return nn.Sequential(conv_bn_act(c_in, c_out, act=act), conv_bn_act(c_out, c_out, act=act))


def up_conv(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    """2x2 stride-2 transposed convolution: ``(N, c_in, H, W)`` -> ``(N, c_out, 2H, 2W)``."""
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)


class ResidualBlock(nn.Module):
    """``body(x) + shortcut(x)`` with 3x3 convolutions and BatchNorm.

    Two flavours:

    * ``preactivation=True`` (He 2016, as in ResUNet): each conv is preceded by
      BN -> activation (the first one's omitted when ``activate_input`` is
      False); nothing follows the sum.
    * ``preactivation=False`` (as in V-Net): conv -> BN -> activation per conv,
      the last activation applied after the sum.

    The first conv carries ``stride``; the shortcut is the identity, or a
    strided 1x1 conv + BN when channels or size change. ``n_convs`` >= 1
    convolutions; ``act`` is an :func:`activation` kind.
    ``(N, c_in, H, W)`` -> ``(N, c_out, H / stride, W / stride)``.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        n_convs: int = 2,
        stride: int = 1,
        act: str = "leaky_relu",
        preactivation: bool = True,
        activate_input: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_convs):
            c, s = (c_in, stride) if i == 0 else (c_out, 1)
            if preactivation and (i > 0 or activate_input):
                layers += [nn.BatchNorm2d(c), activation(act, c)]
            layers.append(nn.Conv2d(c, c_out, 3, stride=s, padding=1, bias=False))
            if not preactivation:
                layers.append(nn.BatchNorm2d(c_out))
                if i < n_convs - 1:
                    layers.append(activation(act, c_out))
        self.body = nn.Sequential(*layers)
        self.shortcut: nn.Module = nn.Identity()
        if c_in != c_out or stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.out_act = nn.Identity() if preactivation else activation(act, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, c_in, H, W)`` -> ``(N, c_out, H / stride, W / stride)``."""
        return self.out_act(self.body(x) + self.shortcut(x))

    def field(self, field: Field) -> Field:
        """Support after the block: the union of both branches."""
        return layer_field(self.body, field).union(layer_field(self.shortcut, field))


def level_channels(width: int, depth: int) -> list[int]:
    """Channels per level ``0..depth``: ``width * 2**level``."""
    return [width * 2**level for level in range(depth + 1)]
