"""Combining losses: weighted sums, deep supervision, and ``--loss`` strings.

:class:`CombinedLoss` sums named terms (the default ``ce+dice``),
:func:`deep_supervision_loss` averages a loss over the heads of a deeply
supervised network, and :func:`build_loss` builds the combination from a
command-line string; the terms themselves are in :mod:`smearscan.losses`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from torch import Tensor, nn

from smearscan.errors import ConfigError
from smearscan.losses import (
    BCELoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
)

#: Loss used when the command line names none.
DEFAULT_LOSS = "ce+dice"


class LossSpecError(ConfigError, ValueError):
    """A loss specification string (``--loss``) cannot be parsed.

    A :class:`ValueError` for library callers and a :class:`ConfigError` so the CLI
    reports it as a bad option.
    """


class CombinedLoss(nn.Module):
    """Weighted sum of named losses: ``L = sum_k lambda_k L_k``.

    Example: ``CombinedLoss({"ce": (CrossEntropyLoss(), 1.0), "dice": (DiceLoss(), 1.0)})``.

    After each call the unweighted value of every term is kept (detached, on the device,
    so no synchronisation happens until it is read) and :attr:`last_parts` returns them
    as floats, for logging.

    Args:
        terms: ``name -> (loss, lambda)``; names must be non-empty, lambdas ``>= 0``.

    Shapes:
        As the terms: logits ``(N, C, H, W)``, target ``(N, H, W)``, weight ``(N, H, W)``
        or None; returns a float32 scalar.
    """

    def __init__(self, terms: Mapping[str, tuple[nn.Module, float]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("CombinedLoss needs at least one term")
        for name, (_, factor) in terms.items():
            if not name or factor < 0:
                raise ValueError(f"bad term {name!r}: names must be non-empty, weights >= 0")
        self.terms = nn.ModuleDict({name: loss for name, (loss, _) in terms.items()})
        self.factors: dict[str, float] = {name: float(f) for name, (_, f) in terms.items()}
        self._last: dict[str, Tensor] = {}

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        parts = {name: loss(logits, target, weight) for name, loss in self.terms.items()}
        self._last = {name: value.detach() for name, value in parts.items()}
        return self._total(parts)

    def _total(self, parts: Mapping[str, Tensor]) -> Tensor:
        total = torch.zeros((), dtype=torch.float32, device=next(iter(parts.values())).device)
        for name, value in parts.items():
            total = total + self.factors[name] * value
        return total

    @property
    def last_parts(self) -> dict[str, float]:
        """Unweighted value of each term at the last call (empty before the first call)."""
        return {name: float(value) for name, value in self._last.items()}

    def parts(self) -> dict[str, float]:
        """Same as :attr:`last_parts`."""
        return self.last_parts

    def extra_repr(self) -> str:
        return ", ".join(f"{name}: {factor:g}" for name, factor in self.factors.items())


def deep_supervision_loss(
    loss: nn.Module,
    heads: Sequence[Tensor],
    target: Tensor,
    weight: Tensor | None = None,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Loss averaged over several output heads (deep supervision, UNet++).

    ``L = sum_k b_k loss(head_k) / sum_k b_k``. A head smaller than the target is
    upsampled bilinearly to the target size before the loss. When ``loss`` is a
    :class:`CombinedLoss` its :attr:`~CombinedLoss.last_parts` become the same weighted
    average over the heads.

    Args:
        loss: A loss of this module (``loss(logits, target, weight)``).
        heads: float ``(N, C, h_k, w_k)`` logits of each head.
        target: int ``(N, H, W)`` class map.
        weight: float ``(N, H, W)`` pixel weights or None.
        weights: ``b_k`` per head (``>= 0``, not all 0); equal weights when None.

    Returns:
        float32 scalar.

    Raises:
        ValueError: No head, or ``weights`` of the wrong length or all zero.
    """
    if not heads:
        raise ValueError("deep supervision needs at least one head")
    factors = [1.0] * len(heads) if weights is None else [float(b) for b in weights]
    if len(factors) != len(heads):
        raise ValueError(f"{len(factors)} head weights given for {len(heads)} heads")
    if any(b < 0 for b in factors) or sum(factors) == 0:
        raise ValueError(f"head weights must be >= 0 and not all 0, got {factors}")
    size = tuple(target.shape[-2:])
    values: list[Tensor] = []
    parts: dict[str, Tensor] = {}
    for head, b in zip(heads, factors, strict=True):
        if tuple(head.shape[-2:]) != size:
            head = F.interpolate(head.float(), size=size, mode="bilinear", align_corners=False)
        values.append(b * loss(head, target, weight))
        if isinstance(loss, CombinedLoss):
            for name, part in loss._last.items():
                parts[name] = parts.get(name, torch.zeros_like(part)) + b * part
    norm = sum(factors)
    if isinstance(loss, CombinedLoss):
        loss._last = {name: part / norm for name, part in parts.items()}
    return torch.stack(values).sum() / norm


# name -> (class, positional parameters, keyword-only parameters) of build_loss.
_LOSSES: dict[str, tuple[type[nn.Module], tuple[str, ...], tuple[str, ...]]] = {
    "ce": (CrossEntropyLoss, (), ()),
    "bce": (BCELoss, (), ("pos_weight",)),
    "dice": (DiceLoss, (), ("smooth",)),
    "tversky": (TverskyLoss, ("alpha", "beta"), ("smooth",)),
    "focal": (FocalLoss, ("gamma",), ()),
}

#: Loss names :func:`build_loss` accepts.
LOSS_NAMES: tuple[str, ...] = tuple(_LOSSES)

_SPEC_HELP = (
    "a loss spec is terms joined by '+' or ',', each NAME[:PARAM...][:WEIGHT] or with "
    "KEY=VALUE fields (w=WEIGHT), e.g. 'ce+dice', 'ce:1,dice:2', 'focal:2', "
    "'tversky:0.3:0.7', 'tversky:alpha=0.3:beta=0.7:w=0.5', 'bce:pos_weight=3'; "
    f"names: {', '.join(LOSS_NAMES)}; positional parameters: "
    + "; ".join(f"{n}: {', '.join(p) or 'none'}" for n, (_, p, _k) in _LOSSES.items())
)


def _number(text: str, term: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise LossSpecError(f"{term!r}: {text!r} is not a finite number ({_SPEC_HELP})")
    return number


def _parse_term(term: str, ignore_index: int | None) -> tuple[str, nn.Module, float]:
    """``NAME[:fields]`` -> (name, loss, weight); raises :class:`LossSpecError`."""
    name, *fields = (f.strip() for f in term.split(":"))
    name = name.lower()
    if name not in _LOSSES:
        raise LossSpecError(
            f"unknown loss {name!r} in {term!r}; valid names: {', '.join(LOSS_NAMES)}"
        )
    cls, positional, keywords = _LOSSES[name]
    values: list[float] = []
    params: dict[str, Any] = {}
    weight = 1.0
    for field in fields:
        key, sep, value = field.partition("=")
        key = key.strip()
        if not sep:
            values.append(_number(field, term))
        elif key in ("w", "weight"):
            weight = _number(value, term)
        elif key in positional or key in keywords:
            params[key] = _number(value, term)
        else:
            allowed = ", ".join(("w", *positional, *keywords))
            raise LossSpecError(f"{term!r}: {name} has no parameter {key!r} (has {allowed})")
    if len(values) > len(positional) + 1:
        raise LossSpecError(f"{term!r}: too many fields ({_SPEC_HELP})")
    if len(values) == len(positional) + 1:
        weight = values.pop()
    for key, number in zip(positional, values, strict=False):
        if key in params:
            raise LossSpecError(f"{term!r}: {key} given twice")
        params[key] = number
    try:
        return name, cls(ignore_index=ignore_index, **params), weight
    except ValueError as exc:
        raise LossSpecError(f"{term!r}: {exc}") from exc


def build_loss(spec: str = DEFAULT_LOSS, *, ignore_index: int | None = None) -> CombinedLoss:
    """Build the training loss from a command-line string.

    Terms are joined by ``+`` or ``,``; each is ``NAME`` followed by ``:``-separated
    fields: first the loss's positional parameters (``tversky``: alpha, beta;
    ``focal``: gamma; the others have none), then an optional term weight; ``KEY=VALUE``
    fields name a parameter (``smooth``, ``pos_weight``...) or the weight (``w``).

    Examples: ``"ce+dice"`` (default), ``"ce:1,dice:2"`` (weights 1 and 2), ``"focal"``
    (gamma 2), ``"focal:1:0.5"`` (gamma 1, weight 0.5), ``"tversky:0.3:0.7"``,
    ``"bce+dice"`` (binary models).

    Args:
        spec: The specification.
        ignore_index: Passed to every term.

    Returns:
        A :class:`CombinedLoss`, even for a single term, so its parts can always be logged.

    Raises:
        LossSpecError: (a :class:`ValueError`) unknown name, bad number, too many fields,
            repeated name or empty spec; the message lists the valid names.
    """
    terms = [t.strip() for t in re.split(r"[+,]", spec)]
    if not spec.strip() or any(not t for t in terms):
        raise LossSpecError(f"empty term in loss spec {spec!r}; {_SPEC_HELP}")
    built: dict[str, tuple[nn.Module, float]] = {}
    for term in terms:
        name, loss, weight = _parse_term(term, ignore_index)
        if name in built:
            raise LossSpecError(f"loss {name!r} appears twice in {spec!r}")
        built[name] = (loss, weight)
    return CombinedLoss(built)
