"""The spreadsheet report ``OUT.xlsx``. Formatting only: no analysis here.

Sheets (DESIGN.md output contract):

* ``Summary``: one row per field image; the contract's columns first, then
  extra columns (its patient/slide ``group`` and the group's flags, how the
  pixel size was obtained, timings, class area fractions, the image-quality
  measures ``quality_*`` at the model scale).
* ``Run``: versions, model, every parameter, start/end time, host.
* ``Cells``: one row per white cell (contract columns, then morphometry);
  the same rows go to ``OUT_cells.parquet`` (CSV without pyarrow).
* ``Differential``: one row per patient/slide group (``--group-by``; an
  ungrouped field is its own group): the fields' counts added up, percentages
  per type, blast count and percentage, the group flags, with a chart.
* ``Errors``: one row per failed slide: slide, stage, message.

The workbook is written to a temporary file and moved into place, so a
crash never leaves a half-written report under the final name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from openpyxl import Workbook
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from smearscan.atomic import atomic_write
from smearscan.cell_types import CELL_TYPES
from smearscan.config import ReviewConfig
from smearscan.flags import summarise_groups
from smearscan.results import GroupResult, SlideResult

log = logging.getLogger(__name__)


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
    "group",
    "group_flags",
    "pixel_size_method",
    "model",
    "model_pixel_size_um",
    "mask_width",
    "mask_height",
    "stitching",
    "tiles",
    "seconds",
    "notes",
    "source_path",
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
        source_path=result.path,
        group=result.group or result.slide,
        group_flags=", ".join(result.group_flags),
    )
    if result.wbc_count is not None:
        blasts = result.cell_counts.get("blast", 0)
        row.update(result.cell_counts)
        row.update(
            wbc_count=result.wbc_count,
            blast_count=blasts,
            blast_percent=round(100.0 * blasts / result.wbc_count, 2) if result.wbc_count else None,
            rbc_count=result.rbc_count,
            platelet_count=result.platelet_count,
        )
    for name, fraction in result.class_fractions.items():
        row[f"{name}_area_fraction"] = fraction
    for name, value in result.quality.items():
        row[f"quality_{name}"] = value
    return row


def _write_table(ws: Worksheet, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Header plus rows; text is always text (a file named ``=cmd|...`` is no formula)."""
    ws.append(list(header))
    for cell in ws[1]:
        cell.font, cell.fill = _HEADER_FONT, _HEADER_FILL
    widths = [len(h) for h in header]
    for row in rows:
        ws.append(list(row))
        for cell in ws[ws.max_row]:
            if cell.data_type == "f":  # openpyxl makes any "=..." string a formula
                cell.data_type = "s"
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


#: Cells columns fixed by the output contract, in order; morphometry columns follow.
CELLS_COLUMNS: tuple[str, ...] = (
    "slide",
    "cell_id",
    "centroid_x",
    "centroid_y",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
    "cell_type",
    "type_confidence",
    "blast_probability",
    "is_blast",
    "touches_edge",
)
#: Excel's row limit, header included; the Parquet/CSV file holds every row.
EXCEL_MAX_ROWS = 1_048_576


def cells_frame(results: Sequence[SlideResult]) -> pd.DataFrame:
    """All Cells rows of a run, contract columns first (empty frame with them when none)."""
    rows = [row for r in results if r.status == "ok" for row in r.cells]
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in CELLS_COLUMNS]
    return frame.reindex(columns=[*CELLS_COLUMNS, *extra])


def write_cells_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write the Cells rows to Parquet (or CSV when pyarrow is missing), atomically.

    Returns:
        The path written (``.parquet`` or ``.csv``).
    """
    try:
        import pyarrow  # noqa: F401

        target, write = path.with_suffix(".parquet"), frame.to_parquet
    except ImportError:
        target, write = path.with_suffix(".csv"), frame.to_csv
    return atomic_write(target, lambda tmp: write(tmp, index=False))


#: Differential columns before the per-type counts.
DIFFERENTIAL_LEAD: tuple[str, ...] = ("group", "fields", "fields_failed", "wbc_count")


def differential_rows(groups: Sequence[GroupResult]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the Differential sheet, one row per group.

    Percentages are of all WBCs counted in the group (None without WBCs).
    """
    header = [*DIFFERENTIAL_LEAD]
    header += [f"{t}_count" for t in CELL_TYPES] + [f"{t}_percent" for t in CELL_TYPES]
    header += ["blast_count", "blast_percent", "flags"]
    rows = []
    for g in groups:
        total = g.wbc_count
        counts = [g.cell_counts.get(t, 0) for t in CELL_TYPES]
        percents = [round(100.0 * c / total, 1) if total else None for c in counts]
        blast_percent = g.blast_percent
        rows.append(
            [
                g.group,
                g.fields,
                g.fields_failed,
                total,
                *counts,
                *percents,
                g.blast_count,
                round(blast_percent, 2) if blast_percent is not None else None,
                ", ".join(g.flags),
            ]
        )
    return header, rows


def _differential(wb: Workbook, groups: Sequence[GroupResult]) -> None:
    """Counts and percentages of WBC types per group, with a stacked bar chart."""
    ws = wb.create_sheet("Differential")
    header, rows = differential_rows(groups)
    _write_table(ws, header, rows)
    if not any(g.wbc_count for g in groups):
        return
    chart = BarChart()
    chart.type, chart.grouping, chart.overlap = "bar", "percentStacked", 100
    chart.title, chart.y_axis.title = "WBC differential", "% of WBCs counted"
    first = len(DIFFERENTIAL_LEAD) + len(CELL_TYPES) + 1  # first percent column
    data = Reference(
        ws, min_col=first, max_col=first + len(CELL_TYPES) - 1, min_row=1, max_row=len(rows) + 1
    )
    chart.add_data(data, titles_from_data=True)
    chart.set_categories(Reference(ws, min_col=1, min_row=2, max_row=len(rows) + 1))
    chart.height, chart.width = max(7.5, 0.6 * len(rows) + 4), 18
    ws.add_chart(chart, f"A{len(rows) + 4}")


def write_report(
    path: Path,
    results: Sequence[SlideResult],
    run_info: dict[str, Any],
    groups: Sequence[GroupResult] | None = None,
) -> Path:
    """Write ``OUT.xlsx`` atomically.

    Args:
        path: Report path (``.xlsx``).
        results: One result per slide, in input order.
        run_info: Flat ``{key: value}`` pairs for the Run sheet.
        groups: The Differential's groups (:func:`smearscan.flags.summarise_groups`);
            None: every field its own group, default thresholds.

    Returns:
        The report path.
    """
    path = Path(path)
    base = path.parent.resolve()
    if groups is None:
        groups = summarise_groups(results, ReviewConfig())
    rows = [summary_row(r, base) for r in results]
    extras = sorted({k for r in rows for k in r} - set(SUMMARY_COLUMNS) - set(EXTRA_COLUMNS))
    header = [*SUMMARY_COLUMNS, *EXTRA_COLUMNS, *extras]

    wb = Workbook()
    summary = wb.active
    summary.title = "Summary"
    _write_table(summary, header, ([r.get(c) for c in header] for r in rows))
    _format_summary(summary, header)
    cells = cells_frame(results)
    if len(cells) >= EXCEL_MAX_ROWS:
        log.warning(
            "%d cells: the Cells sheet keeps the first %d rows, %s has them all",
            len(cells),
            EXCEL_MAX_ROWS - 1,
            path.with_name(f"{path.stem}_cells.*"),
        )
    cells_sheet = wb.create_sheet("Cells")
    _write_table(
        cells_sheet,
        list(cells.columns),
        cells.head(EXCEL_MAX_ROWS - 1).itertuples(index=False, name=None),
    )
    _differential(wb, groups)
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
    write_cells_table(cells, path.with_name(f"{path.stem}_cells.parquet"))
    atomic_write(path, wb.save)
    log.info(
        "report written: %s (%d slides, %d failed)",
        path,
        len(results),
        sum(r.status == "failed" for r in results),
    )
    return path
