"""Training losses for the semantic segmenters, with per-pixel weights for weak labels.

Every loss is a :class:`torch.nn.Module` called as ``loss(logits, target, weight=None)``:

* ``logits``: float ``(N, C, H, W)`` raw scores over ``C`` classes (any float dtype; the
  loss is computed in float32, so it is safe under autocast).
* ``target``: int ``(N, H, W)`` class indices in ``[0, C)``; with ``C == 1`` (a binary
  model) the indices are 0/1. Pixels equal to the loss's ``ignore_index`` are excluded.
* ``weight``: optional float ``(N, H, W)`` per-pixel weights in ``[0, 1]``: 1 for exact
  masks, e.g. 0.3 for pixels of weak labels (ellipses drawn from boxes or points), 0 to
  ignore a pixel. A pixel of weight 0 (or ``ignore_index``) has no influence on the value
  and gets an exactly zero gradient.
* returns a float32 scalar.

Below ``w_i`` is the weight of pixel ``i`` (0 where ignored), ``y_i`` its class,
``p_ic`` the predicted probability of class ``c`` (softmax over ``C``; for ``C == 1`` the
two classes are ``1 - sigmoid`` and ``sigmoid``) and ``g_ic = [y_i == c]`` the one-hot
target. Sums run over all pixels of the batch (batch statistics, steadier than per-image
ones when a class is small or missing from some images).

* Cross-entropy: ``CE = sum_i w_i a_{y_i} (-log p_{i,y_i}) / sum_i w_i a_{y_i}`` with
  optional class weights ``a_c`` (1 by default).
* Binary cross-entropy (``C == 1``): ``BCE = sum_i w_i l_i / sum_i w_i`` with
  ``l_i = -(k y_i log s_i + (1 - y_i) log(1 - s_i))``, ``s_i = sigmoid(z_i)`` and
  ``k = pos_weight``. For ``C == 1`` :class:`CrossEntropyLoss` gives the same value with
  ``k = 1``; a two-channel binary model (``C == 2``) is covered by the plain cross-entropy.
* Soft Dice: per class ``I_c = sum_i w_i p_ic g_ic``, ``S_c = sum_i w_i (p_ic + g_ic)``,
  ``D_c = (2 I_c + s) / (S_c + s)``; the loss is ``1 - mean_c D_c`` over the classes present
  in the target (``sum_i w_i g_ic > 0``).
* Tversky: ``TP_c = sum_i w_i p_ic g_ic``, ``FP_c = sum_i w_i p_ic (1 - g_ic)``,
  ``FN_c = sum_i w_i (1 - p_ic) g_ic``,
  ``T_c = (2 TP_c + s) / (2 TP_c + 2 alpha FP_c + 2 beta FN_c + s)``; the loss is
  ``1 - mean_c T_c`` over the present classes. Without smoothing this is the usual
  ``TP / (TP + alpha FP + beta FN)``; the factor 2 makes ``alpha = beta = 0.5`` exactly
  the soft Dice, smoothing included. ``alpha > beta`` punishes false positives more,
  ``beta > alpha`` false negatives (better recall of small structures).
* Focal: ``FL = sum_i w_i a_{y_i} (1 - p_{i,y_i})^gamma (-log p_{i,y_i}) / sum_i w_i a_{y_i}``:
  the cross-entropy of well-classified pixels is damped; ``gamma = 0`` is the
  cross-entropy, class weights and normalisation included.
* :class:`CombinedLoss`: ``sum_k lambda_k L_k`` over named terms, e.g. the default
  ``ce+dice``; it, deep supervision and the ``--loss`` strings live in
  :mod:`smearscan.loss_spec`.

When no pixel has a positive weight (everything ignored) a loss returns 0 with zero
gradients, so a batch of unlabelled tiles does not break training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from torch import Tensor, nn

# Clamp of ``1 - p`` in the focal factor: keeps the gradient of ``(1 - p)^gamma`` finite
# for ``gamma < 1`` when a probability rounds to exactly 1.
_FOCAL_EPS = 1e-12


# --------------------------------------------------------------------------------------
# Shared input handling
# --------------------------------------------------------------------------------------


def _check_shapes(logits: Tensor, target: Tensor, weight: Tensor | None) -> None:
    """Raise :class:`ValueError` unless logits ``(N, C, H, W)``, target/weight ``(N, H, W)``."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, C, H, W), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must be (N, H, W) = {expected} to match logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if weight is not None and tuple(weight.shape) != expected:
        raise ValueError(f"weight must be (N, H, W) = {expected}, got {tuple(weight.shape)}")


def _prepare(
    logits: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate and normalise the inputs of a loss.

    Args:
        logits: float ``(N, C, H, W)``.
        target: int ``(N, H, W)``.
        weight: float ``(N, H, W)`` or None (all ones).
        ignore_index: Target value to exclude, or None.

    Returns:
        float32 logits ``(N, C, H, W)``; int64 target ``(N, H, W)`` with ignored pixels
        set to class 0 (their weight is 0, so the class does not matter); float32 weights
        ``(N, H, W)``, 0 at ignored pixels.
    """
    _check_shapes(logits, target, weight)
    target = target.long()
    w = torch.ones_like(target, dtype=torch.float32) if weight is None else weight.float()
    if ignore_index is not None:
        ignored = target == ignore_index
        w = w.masked_fill(ignored, 0.0)
        target = target.masked_fill(ignored, 0)
    return logits.float(), target, w


def _log_probabilities(logits: Tensor) -> Tensor:
    """float32 ``(N, K, H, W)`` log-probabilities; ``K = 2`` for binary ``C == 1`` logits."""
    if logits.shape[1] == 1:
        return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=1)
    return F.log_softmax(logits, dim=1)


def _probabilities(logits: Tensor) -> Tensor:
    """float32 ``(N, K, H, W)`` probabilities; ``K = 2`` for binary ``C == 1`` logits."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1.0 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def _one_hot(target: Tensor, n_classes: int) -> Tensor:
    """float32 ``(N, K, H, W)`` one-hot encoding of an int64 ``(N, H, W)`` class map."""
    n, h, w = target.shape
    out = torch.zeros(n, n_classes, h, w, dtype=torch.float32, device=target.device)
    # scatter_ rather than F.one_hot: no host-device synchronisation on CUDA.
    return out.scatter_(1, target.unsqueeze(1), 1.0)


def _weighted_mean(values: Tensor, w: Tensor) -> Tensor:
    """``sum(w * values) / sum(w)``; 0 (still attached to the graph) when ``sum(w) == 0``."""
    total = w.sum()
    return (w * values).sum() / total.clamp_min(torch.finfo(torch.float32).tiny)


def _class_weight_tensor(class_weights: Sequence[float] | Tensor | None) -> Tensor | None:
    """float32 ``(C,)`` tensor of class weights, or None; rejects negative or non-1-D input."""
    if class_weights is None:
        return None
    a = torch.as_tensor(class_weights, dtype=torch.float32).detach().clone()
    if a.ndim != 1 or a.numel() == 0:
        raise ValueError(f"class weights must be a non-empty 1-D sequence, got {tuple(a.shape)}")
    if bool((a < 0).any()):
        raise ValueError("class weights must be non-negative")
    return a


def _pixel_class_weight(class_weights: Tensor | None, target: Tensor, n_classes: int) -> Tensor:
    """float32 ``(N, H, W)`` weight ``a_{y_i}`` of each pixel's class (ones when None)."""
    if class_weights is None:
        return torch.ones_like(target, dtype=torch.float32)
    if class_weights.numel() != n_classes:
        raise ValueError(f"{class_weights.numel()} class weights given for {n_classes} classes")
    return class_weights.to(target.device)[target]


class _SegmentationLoss(nn.Module):
    """Base: stores ``ignore_index`` and types ``forward``."""

    def __init__(self, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"


# --------------------------------------------------------------------------------------
# Pixel-wise losses
# --------------------------------------------------------------------------------------


class CrossEntropyLoss(_SegmentationLoss):
    """Weighted multi-class cross-entropy.

    ``CE = sum_i w_i a_{y_i} (-log p_{i,y_i}) / sum_i w_i a_{y_i}`` (the normalisation of
    :func:`torch.nn.functional.cross_entropy` with class weights, times the weight map).

    Args:
        class_weights: Optional ``(C,)`` non-negative class weights ``a_c``.
        ignore_index: Target value whose pixels are excluded (e.g. 255), or None.

    Shapes:
        logits float ``(N, C, H, W)`` (``C == 1`` is read as binary, see the module
        docstring); target int ``(N, H, W)``; weight float ``(N, H, W)`` or None;
        returns a float32 scalar.
    """

    class_weights: Tensor | None

    def __init__(
        self,
        class_weights: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(ignore_index)
        self.register_buffer("class_weights", _class_weight_tensor(class_weights))

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        logits, target, w = _prepare(logits, target, weight, self.ignore_index)
        log_p = _log_probabilities(logits)
        nll = -log_p.gather(1, target.unsqueeze(1)).squeeze(1)
        w = w * _pixel_class_weight(self.class_weights, target, log_p.shape[1])
        return _weighted_mean(nll, w)


class BCELoss(_SegmentationLoss):
    """Binary cross-entropy on single-channel logits (``C == 1``).

    ``BCE = sum_i w_i l_i / sum_i w_i`` with
    ``l_i = -(k y_i log sigmoid(z_i) + (1 - y_i) log(1 - sigmoid(z_i)))``.

    Args:
        pos_weight: ``k``, weight of the positive class (> 1 favours recall).
        ignore_index: Target value whose pixels are excluded, or None.

    Shapes:
        logits float ``(N, 1, H, W)``; target ``(N, H, W)``, int 0/1 or float in
        ``[0, 1]`` (soft labels); weight float ``(N, H, W)`` or None; returns a float32
        scalar.
    """

    def __init__(self, pos_weight: float = 1.0, ignore_index: int | None = None) -> None:
        super().__init__(ignore_index)
        if pos_weight <= 0:
            raise ValueError(f"pos_weight must be positive, got {pos_weight}")
        self.pos_weight = float(pos_weight)

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        if logits.ndim == 4 and logits.shape[1] != 1:
            raise ValueError(
                f"BCELoss needs single-channel logits (N, 1, H, W), got {tuple(logits.shape)}; "
                "use CrossEntropyLoss for C >= 2"
            )
        _check_shapes(logits, target, weight)
        w = torch.ones_like(target, dtype=torch.float32) if weight is None else weight.float()
        y = target.float()
        if self.ignore_index is not None:
            ignored = target == self.ignore_index
            w = w.masked_fill(ignored, 0.0)
            y = y.masked_fill(ignored, 0.0)
        z = logits.float()[:, 0]
        pos_weight = torch.tensor(self.pos_weight, device=z.device)
        per_pixel = F.binary_cross_entropy_with_logits(
            z, y, reduction="none", pos_weight=pos_weight
        )
        return _weighted_mean(per_pixel, w)

    def extra_repr(self) -> str:
        return f"pos_weight={self.pos_weight}, {super().extra_repr()}"


class FocalLoss(CrossEntropyLoss):
    """Multi-class focal loss (Lin et al. 2017) with a weight map.

    ``FL = sum_i w_i a_{y_i} (1 - p_{i,y_i})^gamma (-log p_{i,y_i}) / sum_i w_i a_{y_i}``.
    ``gamma = 0`` gives exactly :class:`CrossEntropyLoss` with the same class weights.

    Args:
        gamma: Focusing exponent ``>= 0`` (2 is the usual choice).
        alpha: Optional ``(C,)`` non-negative class weights ``a_c``.
        ignore_index: Target value whose pixels are excluded, or None.

    Shapes:
        As :class:`CrossEntropyLoss`.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(class_weights=alpha, ignore_index=ignore_index)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        logits, target, w = _prepare(logits, target, weight, self.ignore_index)
        log_p = _log_probabilities(logits)
        log_pt = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
        per_pixel = -log_pt
        if self.gamma != 0:
            one_minus = (1.0 - log_pt.exp()).clamp_min(_FOCAL_EPS)
            per_pixel = one_minus.pow(self.gamma) * per_pixel
        w = w * _pixel_class_weight(self.class_weights, target, log_p.shape[1])
        return _weighted_mean(per_pixel, w)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, {super().extra_repr()}"


# --------------------------------------------------------------------------------------
# Overlap losses
# --------------------------------------------------------------------------------------


def _overlap_statistics(
    logits: Tensor, target: Tensor, w: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Weighted soft counts per class over the batch.

    Args:
        logits: float32 ``(N, C, H, W)``.
        target: int64 ``(N, H, W)``.
        w: float32 ``(N, H, W)`` pixel weights.

    Returns:
        float32 ``(K,)`` tensors ``TP``, ``sum w p``, ``sum w g`` and a bool ``(K,)`` mask of
        the classes present in the target (``sum w g > 0``); ``K = max(C, 2)``.
    """
    p = _probabilities(logits)
    g = _one_hot(target, p.shape[1])
    wp = p * w.unsqueeze(1)
    dims = (0, 2, 3)
    tp = (wp * g).sum(dims)
    pred_mass = wp.sum(dims)
    true_mass = (g * w.unsqueeze(1)).sum(dims)
    return tp, pred_mass, true_mass, true_mass > 0


def _mean_over_present(score: Tensor, present: Tensor, include: Tensor) -> Tensor:
    """``1 - mean(score[present & include])``; 0 (attached to the graph) if no class is left."""
    keep = present & include
    n = keep.sum()
    mean = (score * keep).sum() / n.clamp_min(1)
    # torch.where rather than an ``if``: no host-device synchronisation on CUDA.
    return torch.where(n > 0, 1.0 - mean, mean * 0.0)


class DiceLoss(_SegmentationLoss):
    """Soft Dice loss on softmax probabilities, averaged over the classes present.

    Per class ``c``: ``I_c = sum_i w_i p_ic g_ic``, ``S_c = sum_i w_i (p_ic + g_ic)``,
    ``D_c = (2 I_c + smooth) / (S_c + smooth)``; loss ``= 1 - mean D_c`` over the classes
    with ``sum_i w_i g_ic > 0`` in the batch (optionally without class 0).

    Args:
        smooth: Added to numerator and denominator; keeps the gradient finite.
        include_background: Whether class 0 takes part in the mean.
        ignore_index: Target value whose pixels are excluded, or None.

    Shapes:
        logits float ``(N, C, H, W)`` (``C == 1``: binary, sigmoid); target int
        ``(N, H, W)``; weight float ``(N, H, W)`` or None; returns a float32 scalar in
        ``[0, 1]``.
    """

    def __init__(
        self,
        smooth: float = 1.0,
        include_background: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(ignore_index)
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = float(smooth)
        self.include_background = include_background

    def _include(self, n_classes: int, device: torch.device) -> Tensor:
        include = torch.ones(n_classes, dtype=torch.bool, device=device)
        if not self.include_background:
            include[0] = False
        return include

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        logits, target, w = _prepare(logits, target, weight, self.ignore_index)
        tp, pred_mass, true_mass, present = _overlap_statistics(logits, target, w)
        dice = (2.0 * tp + self.smooth) / (pred_mass + true_mass + self.smooth).clamp_min(
            torch.finfo(torch.float32).tiny
        )
        return _mean_over_present(dice, present, self._include(dice.numel(), dice.device))

    def extra_repr(self) -> str:
        return (
            f"smooth={self.smooth}, include_background={self.include_background}, "
            f"{super().extra_repr()}"
        )


class TverskyLoss(DiceLoss):
    """Tversky loss: Dice with separate weights for false positives and false negatives.

    ``T_c = (2 TP_c + smooth) / (2 TP_c + 2 alpha FP_c + 2 beta FN_c + smooth)`` with the
    weighted soft counts of the module docstring; loss ``= 1 - mean T_c`` over the classes
    present. ``alpha = beta = 0.5`` is exactly :class:`DiceLoss`.

    Args:
        alpha: Weight of false positives.
        beta: Weight of false negatives.
        smooth: Smoothing term (same role as in :class:`DiceLoss`).
        include_background: Whether class 0 takes part in the mean.
        ignore_index: Target value whose pixels are excluded, or None.

    Shapes:
        As :class:`DiceLoss`.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        include_background: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(smooth, include_background, ignore_index)
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"alpha and beta must be >= 0, not both 0; got {alpha}, {beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        logits, target, w = _prepare(logits, target, weight, self.ignore_index)
        tp, pred_mass, true_mass, present = _overlap_statistics(logits, target, w)
        fp = pred_mass - tp
        fn = true_mass - tp
        denominator = 2.0 * (tp + self.alpha * fp + self.beta * fn) + self.smooth
        score = (2.0 * tp + self.smooth) / denominator.clamp_min(torch.finfo(torch.float32).tiny)
        return _mean_over_present(score, present, self._include(score.numel(), score.device))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, {super().extra_repr()}"
