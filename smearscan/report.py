"""The spreadsheet report ``OUT.xlsx``. Formatting only: no analysis here.

Sheets (DESIGN.md output contract):

* ``Summary``: one row per slide; the contract's columns first, then extra
  columns (how the pixel size was obtained, timings, class area fractions).
* ``Run``: versions, model, every parameter, start/end time, host.
* ``Errors``: one row per failed slide: slide, stage, message.

The workbook is written to a temporary file and moved into place, so a
crash never leaves a half-written report under the final name.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from smearscan.results import SlideResult

log = logging.getLogger(__name__)

#: Cell types of the differential, in report order (counts come with issue #3).
CELL_TYPES: tuple[str, ...] = (
    "neutrophil",
    "lymphocyte",
    "monocyte",
    "eosinophil",
    "basophil",
    "blast",
    "other",
)

#: Summary columns fixed by the output contract, in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "slide",
    "width",
    "height",
    "pixel_size_um",
    "wbc_count",
    "blast_count",
    "blast_percent",
    *CELL_TYPES,
    "rbc_count",
    "platelet_count",
    "flags",
    "status",
    "mask_path",
    "preview_path",
)

#: Extra Summary columns after the contract's.
EXTRA_COLUMNS: tuple[str, ...] = (
    "pixel_size_method",
    "model",
    "model_pixel_size_um",
    "mask_width",
    "mask_height",
    "stitching",
    "tiles",
    "seconds",
    "notes",
)

_HEADER_FONT = Font(bold=True)
_HEADER_FILL = PatternFill("solid", fgColor="DDE6F0")
_FAILED_FILL = PatternFill("solid", fgColor="F8D7DA")


def _relative(path: str, base: Path) -> str:
    if not path:
        return ""
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return path


def summary_row(result: SlideResult, base: Path) -> dict[str, Any]:
    """Summary values of one slide; paths relative to the report's folder."""
    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS)
    row.update(
        slide=result.slide,
        width=result.width,
        height=result.height,
        pixel_size_um=result.pixel_size_um,
        flags=", ".join(result.flags),
        status=result.status,
        mask_path=_relative(result.mask_path, base),
        preview_path=_relative(result.preview_path, base),
        pixel_size_method=result.pixel_size_method,
        model=result.model,
        model_pixel_size_um=result.model_pixel_size_um,
        mask_width=result.mask_width,
        mask_height=result.mask_height,
        stitching=result.stitching,
        tiles=result.tiles,
        seconds=result.seconds,
        notes="; ".join(result.notes),
    )
    for name, fraction in result.class_fractions.items():
        row[f"{name}_area_fraction"] = fraction
    return row


def _write_table(ws: Worksheet, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    ws.append(list(header))
    for cell in ws[1]:
        cell.font, cell.fill = _HEADER_FONT, _HEADER_FILL
    widths = [len(h) for h in header]
    for row in rows:
        ws.append(list(row))
        for i, value in enumerate(row):
            widths[i] = max(widths[i], min(60, len(str(value)) if value is not None else 0))
    ws.freeze_panes = "B2" if ws.title in ("Summary",) else "A2"
    for i, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(i)].width = width + 2
    if len(header):
        ws.auto_filter.ref = ws.dimensions


def _format_summary(ws: Worksheet, header: Sequence[str]) -> None:
    formats = {
        "pixel_size_um": "0.0000",
        "model_pixel_size_um": "0.00",
        "seconds": "0.00",
        "blast_percent": "0.0",
    }
    for col, name in enumerate(header, start=1):
        fmt = formats.get(name) or ("0.0000" if name.endswith("_area_fraction") else None)
        if fmt is None:
            continue
        for (cell,) in ws.iter_rows(min_row=2, min_col=col, max_col=col):
            cell.number_format = fmt
    status_col = list(header).index("status") + 1
    for row in ws.iter_rows(min_row=2):
        if row[status_col - 1].value == "failed":
            for cell in row:
                cell.fill = _FAILED_FILL


def write_report(path: Path, results: Sequence[SlideResult], run_info: dict[str, Any]) -> Path:
    """Write ``OUT.xlsx`` atomically.

    Args:
        path: Report path (``.xlsx``).
        results: One result per slide, in input order.
        run_info: Flat ``{key: value}`` pairs for the Run sheet.

    Returns:
        The report path.
    """
    path = Path(path)
    base = path.parent.resolve()
    rows = [summary_row(r, base) for r in results]
    extras = sorted({k for r in rows for k in r} - set(SUMMARY_COLUMNS) - set(EXTRA_COLUMNS))
    header = [*SUMMARY_COLUMNS, *EXTRA_COLUMNS, *extras]

    wb = Workbook()
    summary = wb.active
    summary.title = "Summary"
    _write_table(summary, header, ([r.get(c) for c in header] for r in rows))
    _format_summary(summary, header)
    _write_table(
        wb.create_sheet("Run"),
        ["key", "value"],
        (
            [k, v if isinstance(v, (int, float, str)) or v is None else str(v)]
            for k, v in run_info.items()
        ),
    )
    _write_table(
        wb.create_sheet("Errors"),
        ["slide", "stage", "message"],
        ([r.slide, r.error_stage, r.error] for r in results if r.status == "failed"),
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".xlsx", dir=path.parent)
    os.close(fd)
    try:
        wb.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info(
        "report written: %s (%d slides, %d failed)",
        path,
        len(results),
        sum(r.status == "failed" for r in results),
    )
    return path
