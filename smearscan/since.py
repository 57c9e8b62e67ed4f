"""``--since``: the start of the period a report covers, from what an operator types.

Accepted: ``all`` (the whole ledger), an ISO 8601 date (``2026-12-01``, from
local midnight) or date and time (``2026-12-01T18:00``, local time unless an
offset such as ``+01:00`` or ``Z`` is given), or a span back from now: a
number and a unit, ``m`` minutes, ``h`` hours, ``d`` days, ``w`` weeks
(``36h``, ``7d``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from smearscan.errors import ConfigError

_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

#: ``since`` value that means the whole ledger.
ALL = "all"


def parse_since(value: str, now: datetime | None = None) -> datetime | None:
    """The UTC instant ``value`` stands for; None for ``all``.

    Args:
        value: What the operator typed (see the module docstring).
        now: The current time (tests); default the clock.

    Raises:
        ConfigError: Not one of the accepted forms; the message lists them.
    """
    text = value.strip().lower()
    if text == ALL:
        return None
    now = now or datetime.now(UTC)
    span = _SPAN.fullmatch(text)
    if span:
        try:
            return now - timedelta(**{_UNITS[span.group(2)]: float(span.group(1))})
        except OverflowError:  # beyond datetime's range (year 1)
            raise ConfigError(
                f"--since {value!r}: the span reaches back before year 1; use 'all' for "
                "the whole ledger"
            ) from None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"--since {value!r}: expected 'all', an ISO date or time (2026-12-01, "
            "2026-12-01T18:00, 2026-12-01T18:00+01:00) or a span back from now (36h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # naive: the machine's local time
    return when.astimezone(UTC)
