"""Build a segmentation network of the U-Net family by architecture name.

Every model built here follows :mod:`smearscan.models.base` (a ``spec`` with
``halo_px`` derived from the computed receptive field, ``size_multiple ==
2**depth``) and also offers ``receptive_field_px()`` and ``forward_heads(x)``.
Weights are freshly initialised (deterministic under ``torch.manual_seed``).
"""

from __future__ import annotations

from collections.abc import Callable

from smearscan.errors import ModelError
from smearscan.models.network import SegmentationNet, check_shape_args
from smearscan.models.resunet import ResUNet
from smearscan.models.unet import UNet
from smearscan.models.unetpp import UNetPlusPlus
from smearscan.models.vnet import VNet

#: Architecture names accepted by :func:`build_model`.
ARCHITECTURES: tuple[str, ...] = ("unet", "unetpp", "resunet", "vnet")

#: The architectures without deep supervision, by name.
_PLAIN: dict[str, Callable[..., SegmentationNet]] = {"unet": UNet, "resunet": ResUNet, "vnet": VNet}


def build_model(
    arch: str,
    *,
    width: int = 16,
    depth: int = 4,
    n_classes: int = 5,
    input_pixel_size_um: float = 0.25,
    deep_supervision: bool = False,
    name: str | None = None,
) -> SegmentationNet:
    """A new, randomly initialised network of architecture ``arch``.

    Args:
        arch: One of :data:`ARCHITECTURES`.
        width: Channels of the first level (level ``i`` has ``width * 2**i``), >= 1.
        depth: Number of 2x down-samplings, 1 to 6; tiles must be multiples of ``2**depth``.
        n_classes: Output channels; 5 uses the names of ``SEMANTIC_CLASSES``.
        input_pixel_size_um: Scale the model works at, recorded in its spec.
        deep_supervision: UNet++ only: one logits head per top-row node.
        name: Model name in the spec (defaults to ``arch``).

    Returns:
        An ``nn.Module`` mapping ``(N, 3, H, W)`` normalised RGB to ``(N, C, H, W)`` logits.

    Raises:
        ModelError: Unknown architecture, invalid ``width``/``depth``/``n_classes``, or
            deep supervision asked for an architecture without it.
    """
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r}; available: {', '.join(ARCHITECTURES)}")
    check_shape_args(width, depth, n_classes)
    if arch == "unetpp":
        return UNetPlusPlus(
            width=width,
            depth=depth,
            n_classes=n_classes,
            input_pixel_size_um=input_pixel_size_um,
            deep_supervision=deep_supervision,
            name=name,
        )
    if deep_supervision:
        raise ModelError(f"deep supervision is only available for unetpp, not {arch!r}")
    return _PLAIN[arch](
        width=width,
        depth=depth,
        n_classes=n_classes,
        input_pixel_size_um=input_pixel_size_um,
        name=name,
    )
