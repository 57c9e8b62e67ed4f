"""Review flags: which fields and which patient/slide groups need a human look.

This module owns the flag names. Field flags go into ``SlideResult.flags``
(the Summary's ``flags`` column) after the cell and quality stages; group
flags into ``GroupResult.flags`` (the Differential's ``flags`` column) and
``SlideResult.group_flags`` of every member field.

=======================  =====  ================================================
flag                     level  set when
=======================  =====  ================================================
``BLASTS_PRESENT``       both   at least one cell is called a blast
``LOW_CONFIDENCE_CELLS`` both   more than ``low_confidence_share`` of the cells
                                have ``type_confidence`` below
                                ``low_confidence_threshold``
``POOR_STAIN_OR_FOCUS``  both   focus or stain measures below their minimum
                                (:mod:`smearscan.quality`); a group has it when
                                any of its fields has
``LOW_WBC_COUNT``        group  fewer than ``min_wbc_count`` WBCs counted over
                                the group's fields (an ungrouped field is its
                                own group)
``NO_SMEAR``             both   the field holds no smear (no illuminated
                                background, or no stained cell:
                                :mod:`smearscan.blank_field`); it is not
                                segmented and counts zero cells; a group has it
                                when any of its fields has
=======================  =====  ================================================
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from smearscan.cell_types import CELL_TYPES
from smearscan.config import ReviewConfig
from smearscan.results import GroupResult, SlideResult

log = logging.getLogger(__name__)

BLASTS_PRESENT = "BLASTS_PRESENT"
LOW_WBC_COUNT = "LOW_WBC_COUNT"
LOW_CONFIDENCE_CELLS = "LOW_CONFIDENCE_CELLS"
POOR_STAIN_OR_FOCUS = "POOR_STAIN_OR_FOCUS"
NO_SMEAR = "NO_SMEAR"

#: Every flag, in the order they are listed.
FLAGS: tuple[str, ...] = (
    BLASTS_PRESENT, LOW_WBC_COUNT, LOW_CONFIDENCE_CELLS, POOR_STAIN_OR_FOCUS, NO_SMEAR,
)  # fmt: skip
#: Field flags that a group takes from any of its fields.
_SHARED_FLAGS = (BLASTS_PRESENT, POOR_STAIN_OR_FOCUS, NO_SMEAR)


def quality_problems(quality: dict[str, float], config: ReviewConfig) -> list[str]:
    """What is wrong with a field's image quality, as readable reasons (empty: fine).

    Args:
        quality: ``SlideResult.quality`` (``focus_laplacian_var``, ``stain_od``,
            ``nucleus_saturation``; NaN or missing values are not judged).
        config: The thresholds.
    """
    limits = (
        ("focus_laplacian_var", config.min_focus_laplacian_var, "out of focus"),
        ("stain_od", config.min_stain_od, "faint stain"),
        ("nucleus_saturation", config.min_nucleus_saturation, "faint nuclei"),
    )
    problems = []
    for name, minimum, meaning in limits:
        value = quality.get(name, math.nan)
        if math.isfinite(value) and value < minimum:
            problems.append(f"{meaning}: {name} {value:.3g} < {minimum:g}")
    return problems


def low_confidence_count(cells: Sequence[dict[str, Any]], threshold: float) -> int:
    """Cells (Cells-sheet rows) whose ``type_confidence`` is below ``threshold``."""
    return sum(float(c.get("type_confidence", 0.0)) < threshold for c in cells)


def _low_confidence(low: int, total: int, config: ReviewConfig) -> bool:
    return total > 0 and low / total > config.low_confidence_share


def _add(flags: list[str], flag: str) -> None:
    if flag not in flags:
        flags.append(flag)


def apply_field_flags(result: SlideResult, config: ReviewConfig) -> None:
    """Append the field-level flags of one processed field to ``result.flags``.

    Quality problems are also written to ``result.notes`` with the measured values.

    Args:
        result: A field after its cell and quality stages (``cells``, ``quality``).
        config: The thresholds.
    """
    if any(c.get("is_blast") for c in result.cells):
        _add(result.flags, BLASTS_PRESENT)
    low = low_confidence_count(result.cells, config.low_confidence_threshold)
    if _low_confidence(low, len(result.cells), config):
        _add(result.flags, LOW_CONFIDENCE_CELLS)
    problems = quality_problems(result.quality, config)
    if problems:
        _add(result.flags, POOR_STAIN_OR_FOCUS)
        result.notes.append(f"{POOR_STAIN_OR_FOCUS}: " + "; ".join(problems))
        log.info("%s: %s: %s", result.slide, POOR_STAIN_OR_FOCUS, "; ".join(problems))


def mark_no_smear(result: SlideResult, reason: str) -> None:
    """Record a field without a smear: no cells, zero counts, ``NO_SMEAR`` and the reason.

    Args:
        result: The field, not segmented.
        reason: Why it holds no smear (:meth:`smearscan.blank_field.FieldContent.blank_reason`).
    """
    result.cells = []
    result.wbc_count, result.rbc_count, result.platelet_count = 0, 0, 0
    result.cell_counts = dict.fromkeys(CELL_TYPES, 0)
    _add(result.flags, NO_SMEAR)
    result.notes.append(f"{NO_SMEAR}: {reason}; not segmented, no cells counted")
    log.warning("%s: %s: %s; not segmented", result.slide, NO_SMEAR, reason)


def _add_field(group: GroupResult, result: SlideResult, config: ReviewConfig) -> None:
    if result.status != "ok" or result.wbc_count is None:
        group.fields_failed += result.status == "failed"
        return
    group.fields += 1
    group.wbc_count += result.wbc_count
    for t in CELL_TYPES:
        group.cell_counts[t] = group.cell_counts.get(t, 0) + result.cell_counts.get(t, 0)
    group.blast_count += result.cell_counts.get("blast", 0)
    group.low_confidence_cells += low_confidence_count(
        result.cells, config.low_confidence_threshold
    )
    for flag in _SHARED_FLAGS:
        if flag in result.flags:
            _add(group.flags, flag)


def summarise_groups(results: Sequence[SlideResult], config: ReviewConfig) -> list[GroupResult]:
    """Add up the fields of each group into one differential and set the group flags.

    A field's group is ``result.group`` (its own name ``result.slide`` when
    empty). Failed fields are counted in ``fields_failed`` and left out of the
    sums; skipped fields are left out entirely. Every member's
    ``group_flags`` is set to its group's flags.

    Args:
        results: The batch's fields, in input order.
        config: The thresholds (``min_wbc_count``, low-confidence limits).

    Returns:
        One result per group, in the order of their first field.
    """
    groups: dict[str, GroupResult] = {}
    for r in results:
        name = r.group or r.slide
        group = groups.setdefault(
            name, GroupResult(group=name, cell_counts=dict.fromkeys(CELL_TYPES, 0))
        )
        _add_field(group, r, config)
    for group in groups.values():
        if group.wbc_count < config.min_wbc_count:
            _add(group.flags, LOW_WBC_COUNT)
        if _low_confidence(group.low_confidence_cells, group.wbc_count, config):
            _add(group.flags, LOW_CONFIDENCE_CELLS)
        group.flags.sort(key=FLAGS.index)
    for r in results:
        r.group_flags = list(groups[r.group or r.slide].flags)
    return list(groups.values())
