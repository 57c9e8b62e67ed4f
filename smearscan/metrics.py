"""Segmentation metrics: a pixel confusion matrix and overlap scores of binary masks.

Pure numpy/torch. The confusion matrix ``M`` is ``(C, C)`` int64 with rows = true class
and columns = predicted class, accumulated over any number of images. For class ``c``:

* ``TP = M[c, c]``, ``FP = sum_r M[r, c] - TP`` (predicted ``c``, truly another class),
  ``FN = sum_k M[c, k] - TP`` (truly ``c``, predicted another class);
* Dice ``= 2 TP / (2 TP + FP + FN)`` (equal to the per-class F1),
  IoU ``= TP / (TP + FP + FN)``, precision ``= TP / (TP + FP)``, recall ``= TP / (TP + FN)``;
* a ratio whose denominator is 0 is NaN: Dice and IoU of a class absent from both truth
  and prediction, precision of a class never predicted, recall of a class never true;
* pixel accuracy ``= trace(M) / sum(M)``.

Means over classes skip NaN values, so an absent class neither helps nor hurts.

For two bool masks, :func:`dice_score` and :func:`iou_score` are 1.0 when both are empty
(a correct "nothing here").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient ``2 |P & T| / (|P| + |T|)`` of two masks (1.0 when both are empty).

    Args:
        pred: bool ``(...)`` predicted mask (non-zero counts as True).
        truth: bool mask of the same shape.

    Raises:
        ValueError: The shapes differ.
    """
    p, t = _bool_pair(pred, truth)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(p, t).sum()) / total


def iou_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union ``|P & T| / |P | T|`` of two masks (1.0 when both are empty).

    Args:
        pred: bool ``(...)`` predicted mask (non-zero counts as True).
        truth: bool mask of the same shape.

    Raises:
        ValueError: The shapes differ.
    """
    p, t = _bool_pair(pred, truth)
    union = int(np.logical_or(p, t).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, t).sum()) / union


def _bool_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred).astype(bool, copy=False)
    t = np.asarray(truth).astype(bool, copy=False)
    if p.shape != t.shape:
        raise ValueError(f"masks differ in shape: {p.shape} vs {t.shape}")
    return p, t


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """float64 ``numerator / denominator``, NaN where the denominator is 0."""
    num = numerator.astype(np.float64)
    den = denominator.astype(np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nan_mean(values: np.ndarray) -> float:
    """Mean of the non-NaN values (NaN if there are none), without numpy's warning."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


class ConfusionMatrix:
    """Pixel confusion matrix accumulated over images, with per-class scores.

    Args:
        n_classes: Number of classes ``C``; class values are ``0 .. C-1``.
        class_names: ``C`` names used by :meth:`summary` (default ``class_0``...).
        ignore_index: Target value whose pixels are skipped (e.g. 255), or None.
        background_index: Class left out of the means of :meth:`summary` unless
            ``include_background`` is set; None when there is no background class.

    Attributes:
        matrix: int64 ``(C, C)``, rows = truth, columns = prediction.
    """

    def __init__(
        self,
        n_classes: int,
        class_names: Sequence[str] | None = None,
        *,
        ignore_index: int | None = None,
        background_index: int | None = 0,
    ) -> None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        names = [f"class_{i}" for i in range(n_classes)] if class_names is None else class_names
        if len(names) != n_classes:
            raise ValueError(f"{len(names)} class names given for {n_classes} classes")
        if background_index is not None and not 0 <= background_index < n_classes:
            raise ValueError(f"background_index {background_index} outside 0..{n_classes - 1}")
        self.n_classes = n_classes
        self.class_names: tuple[str, ...] = tuple(names)
        self.ignore_index = ignore_index
        self.background_index = background_index
        self.matrix = np.zeros((n_classes, n_classes), np.int64)

    def reset(self) -> None:
        """Set every count back to 0."""
        self.matrix[:] = 0

    def update(self, pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None) -> None:
        """Add the pixels of one image or batch.

        Args:
            pred: int ``(N, H, W)`` or ``(H, W)`` predicted classes (torch or numpy; an
                argmax of the logits, not the logits).
            target: int true classes, same shape.
            mask: Optional bool, same shape: only True pixels count. Pixels whose target
                equals ``ignore_index`` never count.

        Raises:
            ValueError: Shapes differ, or a counted pixel has a class outside ``0..C-1``.
        """
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        if mask is not None and tuple(mask.shape) != tuple(target.shape):
            raise ValueError(f"mask {tuple(mask.shape)} and target {tuple(target.shape)} differ")
        if isinstance(pred, Tensor) or isinstance(target, Tensor):
            counts = self._count_torch(pred, target, mask)
        else:
            counts = self._count_numpy(pred, target, mask)
        self.matrix += counts.reshape(self.n_classes, self.n_classes)

    def _count_torch(
        self, pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None
    ) -> np.ndarray:
        t = torch.as_tensor(target).reshape(-1).long()
        p = torch.as_tensor(pred, device=t.device).reshape(-1).long()
        keep = torch.ones_like(t, dtype=torch.bool)
        if mask is not None:
            keep &= torch.as_tensor(mask, device=t.device).reshape(-1).bool()
        if self.ignore_index is not None:
            keep &= t != self.ignore_index
        t, p = t[keep], p[keep]
        if t.numel():
            t_min, t_max, p_min, p_max = torch.stack([t.min(), t.max(), p.min(), p.max()]).tolist()
            self._check_range(t_min, t_max, p_min, p_max)
        counts = torch.bincount(t * self.n_classes + p, minlength=self.n_classes**2)
        return counts.cpu().numpy().astype(np.int64)

    def _count_numpy(
        self, pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None
    ) -> np.ndarray:
        t = np.asarray(target).reshape(-1).astype(np.int64)
        p = np.asarray(pred).reshape(-1).astype(np.int64)
        keep = np.ones(t.shape, bool)
        if mask is not None:
            keep &= np.asarray(mask).reshape(-1).astype(bool)
        if self.ignore_index is not None:
            keep &= t != self.ignore_index
        t, p = t[keep], p[keep]
        if t.size:
            self._check_range(int(t.min()), int(t.max()), int(p.min()), int(p.max()))
        return np.bincount(t * self.n_classes + p, minlength=self.n_classes**2).astype(np.int64)

    def _check_range(self, t_min: int, t_max: int, p_min: int, p_max: int) -> None:
        top = self.n_classes - 1
        if t_min < 0 or t_max > top:
            raise ValueError(
                f"target classes span {t_min}..{t_max}, expected 0..{top} "
                f"(ignore_index={self.ignore_index})"
            )
        if p_min < 0 or p_max > top:
            raise ValueError(f"predicted classes span {p_min}..{p_max}, expected 0..{top}")

    # ---- per-class counts and scores ------------------------------------------------

    @property
    def n_pixels(self) -> int:
        """Number of pixels counted so far."""
        return int(self.matrix.sum())

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """int64 ``(C,)`` TP, FP and FN."""
        tp = np.diag(self.matrix)
        return tp, self.matrix.sum(axis=0) - tp, self.matrix.sum(axis=1) - tp

    def dice(self) -> np.ndarray:
        """float64 ``(C,)`` Dice ``2 TP / (2 TP + FP + FN)``; NaN for a class in neither."""
        tp, fp, fn = self._counts()
        return _ratio(2 * tp, 2 * tp + fp + fn)

    def f1(self) -> np.ndarray:
        """float64 ``(C,)`` F1 score; for pixel classification it is the Dice score."""
        return self.dice()

    def iou(self) -> np.ndarray:
        """float64 ``(C,)`` IoU (Jaccard) ``TP / (TP + FP + FN)``; NaN for a class in neither."""
        tp, fp, fn = self._counts()
        return _ratio(tp, tp + fp + fn)

    def precision(self) -> np.ndarray:
        """float64 ``(C,)`` ``TP / (TP + FP)``; NaN for a class never predicted."""
        tp, fp, _ = self._counts()
        return _ratio(tp, tp + fp)

    def recall(self) -> np.ndarray:
        """float64 ``(C,)`` ``TP / (TP + FN)``; NaN for a class never true."""
        tp, _, fn = self._counts()
        return _ratio(tp, tp + fn)

    def pixel_accuracy(self) -> float:
        """Fraction of counted pixels predicted correctly (NaN before any pixel)."""
        total = self.n_pixels
        return float("nan") if total == 0 else float(np.trace(self.matrix)) / total

    def _mean(self, values: np.ndarray, include_background: bool) -> float:
        keep = np.ones(self.n_classes, bool)
        if not include_background and self.background_index is not None:
            keep[self.background_index] = False
        return _nan_mean(values[keep])

    def summary(self, include_background: bool = False) -> dict[str, float]:
        """Flat scores for a CSV row.

        Keys: ``dice/<name>``, ``iou/<name>``, ``precision/<name>``, ``recall/<name>``
        for every class, ``pixel_accuracy``, ``mean_dice`` and ``mean_iou`` (means over
        the non-NaN classes, without the background class unless ``include_background``).
        Undefined values are NaN.
        """
        out: dict[str, float] = {}
        scores = {
            "dice": self.dice(),
            "iou": self.iou(),
            "precision": self.precision(),
            "recall": self.recall(),
        }
        for metric, values in scores.items():
            for name, value in zip(self.class_names, values, strict=True):
                out[f"{metric}/{name}"] = float(value)
        out["pixel_accuracy"] = self.pixel_accuracy()
        out["mean_dice"] = self._mean(scores["dice"], include_background)
        out["mean_iou"] = self._mean(scores["iou"], include_background)
        return out
