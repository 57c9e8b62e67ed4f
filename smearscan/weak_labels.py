"""Weak training masks from boxes and points.

Detection-style annotations (YOLO or VOC boxes, ALL-IDB centre points) say
where a cell is, not which pixels belong to it. They become a class map plus a
per-pixel weight map (see :mod:`smearscan.losses`):

* a box becomes the ellipse inscribed in it, filled with the box's class; the
  corners between ellipse and box are ignored (weight 0), since they may hold
  the cell's edge or its neighbour;
* a point becomes a disc of the cell's typical diameter (µm, converted with the
  image's pixel size), with an ignored ring around it of the same width as the
  uncertainty of that size;
* a WBC shape gets :data:`ANY_WBC`: "cytoplasm or nucleus, unknown which".
  :class:`PartialLabelLoss` scores such pixels by the summed probability of the
  two classes and keeps them out of the wrapped loss; :func:`resolve_any_wbc`
  simply ignores them;
* pixels outside every shape are background, at the weak weight too: boxes of a
  complete annotation (TXL-PBC) leave little else, but a missed cell is possible.

Every weak pixel gets ``weak_weight`` (default 0.3); exact masks use 1. Where
shapes overlap, the later shape wins (callers order RBCs before WBCs, so a
WBC lying on an RBC keeps its label).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from torch import Tensor, nn

from smearscan.datasets import Box, Point
from smearscan.models.base import SEMANTIC_CLASSES

#: Target value for pixels that are ignored by the loss.
IGNORE = 255
#: Target value meaning "WBC cytoplasm or WBC nucleus" (a partial label).
ANY_WBC = 254
#: Target value meaning "not part of a WBC": background, RBC or platelet (a partial
#: label: the background of wbc-seg masks, which includes the RBCs).
NOT_WBC = 253

BACKGROUND = SEMANTIC_CLASSES.index("background")

#: Partial label -> the classes it allows.
PARTIAL_LABELS: dict[int, tuple[int, ...]] = {
    ANY_WBC: (SEMANTIC_CLASSES.index("wbc_cytoplasm"), SEMANTIC_CLASSES.index("wbc_nucleus")),
    NOT_WBC: (
        SEMANTIC_CLASSES.index("background"),
        SEMANTIC_CLASSES.index("rbc"),
        SEMANTIC_CLASSES.index("platelet"),
    ),
}

#: Box / point label -> target value. Labels are lower-cased before lookup.
DEFAULT_LABEL_CLASSES: dict[str, int] = {
    "wbc": ANY_WBC,
    "blast": ANY_WBC,
    "rbc": SEMANTIC_CLASSES.index("rbc"),
    "platelet": SEMANTIC_CLASSES.index("platelet"),
    "platelets": SEMANTIC_CLASSES.index("platelet"),
}

#: Typical diameters (µm) for point annotations, by label.
DEFAULT_POINT_DIAMETER_UM: dict[str, float] = {"wbc": 12.0, "blast": 14.0, "rbc": 7.5}


@dataclass(frozen=True)
class WeakMask:
    """A weak training target.

    Attributes:
        target: uint8 ``(H, W)``: class indices, :data:`ANY_WBC` or :data:`IGNORE`.
        weight: float32 ``(H, W)`` in ``[0, 1]``; 0 wherever ``target == IGNORE``.
    """

    target: np.ndarray
    weight: np.ndarray


def _class_of(label: str, classes: Mapping[str, int]) -> int:
    try:
        return classes[label.lower()]
    except KeyError:
        raise ValueError(
            f"no class for annotation label {label!r}; known: {', '.join(sorted(classes))}"
        ) from None


def _ellipse(mask: np.ndarray, cx: float, cy: float, ax: float, ay: float, value: int) -> None:
    """Fill an axis-aligned ellipse (centre and semi-axes in pixels) with ``value``."""
    shift = 4  # sub-pixel precision of cv2.ellipse
    scale = 1 << shift
    cv2.ellipse(
        mask,
        (round(cx * scale), round(cy * scale)),
        (max(1, round(ax * scale)), max(1, round(ay * scale))),
        0,
        0,
        360,
        value,
        thickness=-1,
        lineType=cv2.LINE_8,
        shift=shift,
    )


def weak_mask(
    shape: tuple[int, int],
    *,
    boxes: Sequence[Box] = (),
    points: Sequence[Point] = (),
    pixel_size_um: float | None = None,
    weak_weight: float = 0.3,
    label_classes: Mapping[str, int] = DEFAULT_LABEL_CLASSES,
    point_diameter_um: Mapping[str, float] = DEFAULT_POINT_DIAMETER_UM,
    point_margin: float = 0.25,
) -> WeakMask:
    """Rasterise boxes and points into a weak target and weight map.

    Args:
        shape: ``(H, W)`` of the image, pixels.
        boxes: Boxes in image pixels (:func:`smearscan.datasets.read_yolo_boxes`...).
        points: Cell centres in image pixels.
        pixel_size_um: µm per pixel; needed when ``points`` are given.
        weak_weight: Loss weight of every labelled pixel (0 < w <= 1).
        label_classes: Label -> target value.
        point_diameter_um: Label -> disc diameter for points.
        point_margin: Relative width of the ignored ring around a point's disc.

    Returns:
        The :class:`WeakMask`.

    Raises:
        ValueError: Unknown label, missing pixel size for points, bad weight.
    """
    if not 0 < weak_weight <= 1:
        raise ValueError(f"weak_weight must be in (0, 1], got {weak_weight}")
    if points and not (pixel_size_um and pixel_size_um > 0):
        raise ValueError("point annotations need the image's pixel size (µm/px)")
    target = np.full(shape, BACKGROUND, np.uint8)
    unsure = np.zeros(shape, np.uint8)  # 1 where the label is not trusted (ignored)
    for box in boxes:  # a later shape overrides an earlier one, ignored corners included
        value = _class_of(box.label, label_classes)
        cx, cy = box.centre
        ax, ay = (box.x1 - box.x0) / 2, (box.y1 - box.y0) / 2
        y0, y1 = max(0, int(box.y0)), min(shape[0], int(np.ceil(box.y1)))
        x0, x1 = max(0, int(box.x0)), min(shape[1], int(np.ceil(box.x1)))
        unsure[y0:y1, x0:x1] = 1
        _ellipse(unsure, cx - 0.5, cy - 0.5, ax, ay, 0)
        _ellipse(target, cx - 0.5, cy - 0.5, ax, ay, value)
    for point in points:
        value = _class_of(point.label, label_classes)
        diameter = point_diameter_um.get(point.label.lower())
        if diameter is None:
            raise ValueError(f"no typical diameter for point label {point.label!r}")
        radius = diameter / 2 / float(pixel_size_um)  # type: ignore[arg-type]
        outer, inner = radius * (1 + point_margin), radius * (1 - point_margin)
        _ellipse(unsure, point.x, point.y, outer, outer, 1)
        _ellipse(unsure, point.x, point.y, inner, inner, 0)
        _ellipse(target, point.x, point.y, inner, inner, value)
    target[unsure.astype(bool)] = IGNORE
    weight = np.where(target == IGNORE, 0.0, weak_weight).astype(np.float32)
    return WeakMask(target, weight)


def resolve_any_wbc(mask: WeakMask) -> WeakMask:
    """The same mask with :data:`ANY_WBC` pixels ignored, for losses without partial labels."""
    target = np.where(mask.target == ANY_WBC, IGNORE, mask.target).astype(np.uint8)
    weight = np.where(target == IGNORE, 0.0, mask.weight).astype(np.float32)
    return WeakMask(target, weight)


class PartialLabelLoss(nn.Module):
    """A loss over targets that may hold partial labels (a set of allowed classes).

    Pixels whose target is a key of ``partial`` (e.g. :data:`ANY_WBC`) are taken out
    of the wrapped loss (passed to it as ``ignore_index`` with weight 0) and scored by
    ``-log sum_{c in S} p_c``, the negative log-probability of the allowed set,
    averaged with the weight map over those pixels and multiplied by ``factor``.
    The network is pushed towards "some WBC class" there without being told which.

    Args:
        loss: The loss for ordinary targets; called as ``loss(logits, target, weight)``
            and it must ignore ``ignore_index`` (e.g. ``build_loss(..., ignore_index=255)``).
        partial: Partial label value -> allowed classes.
        factor: Weight of the partial-label term.
        ignore_index: The value ``loss`` ignores.

    Shapes:
        logits float ``(N, C, H, W)``; target int ``(N, H, W)``; weight float
        ``(N, H, W)`` or None; returns a float32 scalar.
    """

    def __init__(
        self,
        loss: nn.Module,
        partial: Mapping[int, Sequence[int]] = PARTIAL_LABELS,
        *,
        factor: float = 1.0,
        ignore_index: int = IGNORE,
    ) -> None:
        super().__init__()
        terms = getattr(loss, "terms", None)
        inner = list(terms.values()) if isinstance(terms, nn.ModuleDict) else [loss]
        for term in inner:
            if getattr(term, "ignore_index", None) != ignore_index:
                raise ValueError(
                    f"{type(term).__name__} must ignore {ignore_index} to wrap partial labels"
                )
        if factor < 0:
            raise ValueError(f"factor must be >= 0, got {factor}")
        self.loss = loss
        self.partial = {int(k): tuple(int(c) for c in v) for k, v in partial.items()}
        self.factor = factor
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        target = target.long()
        w = torch.ones_like(target, dtype=torch.float32) if weight is None else weight.float()
        masks = {value: target == value for value in self.partial}
        any_partial = torch.zeros_like(target, dtype=torch.bool)
        for mask in masks.values():
            any_partial |= mask
        total = self.loss(
            logits,
            target.masked_fill(any_partial, self.ignore_index),
            w.masked_fill(any_partial, 0.0),
        )
        log_p = F.log_softmax(logits.float(), dim=1)
        tiny = torch.finfo(torch.float32).tiny
        for value, mask in masks.items():
            nll = -torch.logsumexp(log_p[:, list(self.partial[value])], dim=1)
            pw = w * mask
            total = total + self.factor * (pw * nll).sum() / pw.sum().clamp_min(tiny)
        return total
