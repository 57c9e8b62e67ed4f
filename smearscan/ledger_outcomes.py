"""What the report says of ledger slides this run did not simply process: the rows a
``--since`` report takes from the ledger, the ledger slides it runs again, and a
processed slide whose outcome the ledger could not record (see
:mod:`smearscan.batch_ledger`)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smearscan.ledger_rows import LedgerRow
from smearscan.results import SlideResult
from smearscan.slide_keys import unique_keys

log = logging.getLogger(__name__)


def earlier_problem(row: LedgerRow, interrupted: bool) -> SlideResult:
    """The report's result of a ledger row that is not ``ok``: ``failed`` (held, or
    failed for a passing cause and left for the next run) or ``skipped`` (not run,
    interrupted, in progress elsewhere), with the reason for the Errors sheet.

    Args:
        row: The path's latest ledger row.
        interrupted: The row is ``running`` in a run that was killed.
    """
    status, stage, error = "failed", row.error_stage, row.error
    if row.status == "skipped" and row.error_stage:  # a passing cause (mark_retry)
        error = f"{row.error} (the next run over its folder tries it again)"
    elif row.status == "skipped":
        status, stage, error = "skipped", "not run", row.error or "not run"
    elif row.status == "running":
        status, stage = "skipped", "interrupted" if interrupted else "in progress"
        error = (
            f"interrupted: the run processing it was killed (attempt {row.attempts})"
            if interrupted
            else f"in progress in run {row.run_id}"
        )
    return SlideResult(
        slide=row.name,
        path=row.path,
        status=status,
        error_stage=stage,
        error=error,
        seconds=row.seconds or 0.0,
        group=row.name,
    )


@dataclass(frozen=True)
class EarlierTask:
    """A slide of the ledger run again for a ``--since`` report (its stored result or
    masks are gone): what running a slide reads of a :class:`smearscan.batch.SlideTask`."""

    path: Path
    relative: str
    key: str
    group: str = ""
    grouped: bool = True
    scale: Any = None  # the pixel-size decision, as SlideTask.scale


def redo_tasks(rows: Sequence[LedgerRow], tasks: Sequence[Any]) -> list[EarlierTask]:
    """Tasks for ledger rows to process again, keyed apart from the batch's own tasks."""
    relatives = [t.relative for t in tasks] + [row.name for row in rows]
    keys = unique_keys(relatives, [t.path for t in tasks] + [row.path for row in rows])
    keys = keys[len(tasks) :]
    return [
        EarlierTask(Path(row.path), row.name, key, row.name)
        for row, key in zip(rows, keys, strict=True)
    ]


def fail_unstored(result: SlideResult, where: str, exc: Exception) -> None:
    """Turn a processed slide whose result the ledger could not keep into a failure.

    A failed slide leaves no masks and no counts in the report (its Zarr group
    is removed, and so from the store's list of slides); the next run processes it again.
    """
    if result.mask_path:
        from smearscan.zarr_store import discard_slide_store  # a slide ran: zarr is loaded

        group = Path(result.mask_path)
        try:
            discard_slide_store(group.parent, group.name)
        except OSError as again:  # the disk is full: the group goes, the list waits for a run
            log.warning("%s: masks %s not removed cleanly: %s", result.slide, group, again)
            shutil.rmtree(group, ignore_errors=True)
    result.status, result.error_stage = "failed", "ledger"
    result.error = (
        f"processed, but {where} could not record it ({exc}); the next run processes it again"
    )
    result.mask_path = result.preview_path = ""
    result.cells, result.cell_counts = [], {}
    result.wbc_count = result.rbc_count = result.platelet_count = None
