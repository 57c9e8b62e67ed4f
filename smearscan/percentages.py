"""Percentages of the report, the review page and the Differential: one function, one rounding.

A blast percentage is blasts / all WBCs counted x 100 (CLSI H20), as every
other type's share of the differential; all are rounded to
:data:`PERCENT_DECIMALS` decimals, so the Summary, the Differential and the
review page show the same number for the same counts.
"""

from __future__ import annotations

#: Decimals of every percentage written (Summary, Differential, review page).
PERCENT_DECIMALS = 1


def percent_of(count: int, total: int | None) -> float | None:
    """``100 * count / total`` rounded to :data:`PERCENT_DECIMALS`; None without a total.

    Args:
        count: Cells of one kind (e.g. blasts).
        total: All WBCs counted; None or 0: no percentage.
    """
    if not total:
        return None
    return round(100.0 * count / total, PERCENT_DECIMALS)
