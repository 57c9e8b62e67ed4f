"""The interface every segmentation model of smearscan offers.

A segmenter is a :class:`torch.nn.Module` with a :class:`ModelSpec` attached
as ``spec``. The tiled inference engine only relies on this interface, so the
classical stain-based segmenter and the trained U-Net family are
interchangeable.

Forward contract:
    input: float32 tensor ``(N, 3, H, W)``, RGB scaled to [0, 1] and then
        normalised with ``(x - spec.mean) / spec.std`` per channel, sampled at
        ``spec.input_pixel_size_um`` micrometres per pixel. ``H`` and ``W`` are
        multiples of ``spec.size_multiple``. A model whose ``spec.input`` is
        ``"uint8"`` (a non-neural one working on 8-bit colours) receives the
        raw RGB uint8 tensor ``(N, 3, H, W)`` instead.
    output: float tensor ``(N, C, H, W)`` with ``C == len(spec.classes)``:
        logits when ``spec.output == "logits"`` (the engine applies a softmax
        over ``C``), probabilities summing to 1 over ``C`` otherwise.

Optional per-slide calibration: a segmenter may define
``calibrate(sample: np.ndarray) -> None`` taking an RGB uint8 ``(H, W, 3)``
sample of the slide at the input scale. The engine calls it once per slide,
before any tile, so that slide-level statistics (stain colours) are fixed and
tiled results equal whole-image results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

#: The semantic map of DESIGN.md: index -> class name (uint8 values of ``labels/classes``).
SEMANTIC_CLASSES: tuple[str, ...] = (
    "background",
    "rbc",
    "wbc_cytoplasm",
    "wbc_nucleus",
    "platelet",
)


@dataclass(frozen=True)
class ModelSpec:
    """What the engine must know to run a segmenter.

    Attributes:
        name: Model name as given to ``--model`` (``classical``, a registry name...).
        architecture: Architecture family (``classical``, ``unet``, ``unetpp``...).
        input_pixel_size_um: Scale the model expects, in micrometres per pixel.
        halo_px: Receptive-field radius in input pixels: context a tile needs on
            each side for its centre to equal whole-image inference.
        classes: Output channel names, in order.
        size_multiple: Tile sides and tile offsets must be multiples of this
            (``2**depth`` for a U-Net, 1 for a classical filter).
        output: Whether forward returns ``logits`` or ``probabilities``.
        mean: Per-channel RGB mean subtracted after scaling to [0, 1].
        std: Per-channel RGB std divided after subtracting the mean.
        tile_px: Preferred tile side (used when the configuration sets none):
            large enough that the halo costs little, small enough for memory.
        input: ``normalized`` float input (neural models) or raw ``uint8``.
    """

    name: str
    architecture: str
    input_pixel_size_um: float
    halo_px: int
    classes: tuple[str, ...] = SEMANTIC_CLASSES
    size_multiple: int = 1
    output: Literal["logits", "probabilities"] = "logits"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    tile_px: int = 512
    input: Literal["normalized", "uint8"] = "normalized"
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def n_classes(self) -> int:
        """Number of output channels ``C``."""
        return len(self.classes)


@runtime_checkable
class Segmenter(Protocol):
    """Structural type of a segmenter: an ``nn.Module`` with a ``spec``."""

    spec: ModelSpec

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - protocol
        """Map ``(N, 3, H, W)`` normalised RGB to ``(N, C, H, W)`` logits or probabilities."""
        ...

    def eval(self) -> torch.nn.Module:  # pragma: no cover - protocol
        """Switch to inference mode (``torch.nn.Module.eval``)."""
        ...


def calibrate_if_supported(model: torch.nn.Module, sample: np.ndarray) -> None:
    """Call ``model.calibrate(sample)`` when the model defines it.

    Args:
        model: A segmenter.
        sample: RGB uint8 array ``(H, W, 3)`` of the slide at the model's input scale.
    """
    calibrate = getattr(model, "calibrate", None)
    if callable(calibrate):
        calibrate(sample)
