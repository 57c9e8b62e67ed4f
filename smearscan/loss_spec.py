"""Build a training loss from a command-line string (``--loss``), e.g. ``"ce+dice"``.

See :func:`build_loss` for the grammar and :mod:`smearscan.losses` for the losses.
"""

from __future__ import annotations

import math
import re
from typing import Any

from torch import nn

from smearscan.errors import ConfigError
from smearscan.losses import (
    BCELoss,
    CombinedLoss,
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
