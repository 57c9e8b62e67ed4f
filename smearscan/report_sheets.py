"""XlsxWriter sheet writing for :mod:`smearscan.report`: tables, styles, the chart.

Why XlsxWriter: it writes a cell in a few microseconds where openpyxl took
10-25 (a re-run reporting 100 stored slides, 93k cells, spent 2.4 s in
openpyxl and about 1 s here), and in its ``constant_memory`` mode it keeps
only the current row in memory, so memory does not grow with the Cells
sheet. That mode takes each sheet's rows in order, each row once: column
widths are measured on the rows beforehand, and every row is written in one
pass.

Values keep their type; text is always text (a file named ``=cmd|...`` is
no formula, ``http://...`` no link, ``0123`` no number); None, NaN, the
infinities and empty text are empty cells.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xlsxwriter

from smearscan.atomic import track_temps, untrack_temps

if TYPE_CHECKING:
    from xlsxwriter.format import Format
    from xlsxwriter.workbook import Workbook
    from xlsxwriter.worksheet import Worksheet

#: XlsxWriter options: rows streamed to disk, and text never turned into
#: formulas, links or numbers.
WORKBOOK_OPTIONS: dict[str, Any] = {
    "constant_memory": True,
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
}
_HEADER_STYLE: dict[str, Any] = {"bold": True, "pattern": 1, "bg_color": "#DDE6F0"}
_FAILED_STYLE: dict[str, Any] = {"pattern": 1, "bg_color": "#F8D7DA"}
#: Summary number formats by column (``*_area_fraction`` columns: ``0.0000``).
SUMMARY_NUMBER_FORMATS: dict[str, str] = {
    "pixel_size_um": "0.0000",
    "model_pixel_size_um": "0.00",
    "seconds": "0.00",
    "blast_percent": "0.0",
}
#: Column widths are measured on the header and this many rows.
WIDTH_SAMPLE_ROWS = 500
_MAX_WIDTH = 60
_PX_PER_CM = 96 / 2.54
_PLAIN_TYPES = (bool, int, float, str)

#: Per-row cell formats: one per column (None: unformatted).
RowStyle = Callable[[Sequence[Any]], Sequence["Format | None"]]


class _ScratchWorkbook(xlsxwriter.Workbook):
    """A workbook whose ``constant_memory`` row files go to a scratch folder of its own.

    The folder is removed by :meth:`close`, and by
    :func:`smearscan.atomic.remove_temps_in_progress` when a second signal
    aborts the run mid-write, so no row file is left in the system temp folder.
    """

    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        prefix = f"smearscan-xlsx-{os.getpid()}-"  # this process's own, for the cleanup
        self._tracked = track_temps(tempfile.gettempdir(), prefix)
        self._scratch = ""
        try:
            self._scratch = tempfile.mkdtemp(prefix=prefix)
            super().__init__(str(path), {**options, "tmpdir": self._scratch})
        except BaseException:
            self._remove_scratch()
            raise

    def _remove_scratch(self) -> None:
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
        untrack_temps(self._tracked)

    def close(self) -> None:
        """Write the file, then remove the scratch folder (also when writing fails)."""
        try:
            super().close()
        finally:
            self._remove_scratch()


def new_workbook(path: Path) -> Workbook:
    """An XlsxWriter workbook with :data:`WORKBOOK_OPTIONS`; ``close()`` writes ``path``
    (and removes the workbook's scratch folder)."""
    return _ScratchWorkbook(path, WORKBOOK_OPTIONS)


def column_widths(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[int]:
    """Column widths in characters: the longest of the header and the first
    :data:`WIDTH_SAMPLE_ROWS` rows (at most 60), plus 2."""
    widths = [len(h) for h in header]
    for row in rows[:WIDTH_SAMPLE_ROWS]:
        for i, value in enumerate(row):
            if value is not None:
                widths[i] = max(widths[i], min(_MAX_WIDTH, len(str(value))))
    return [w + 2 for w in widths]


def plain(value: Any) -> Any:
    """``value`` as None, bool, int, float or str: numpy scalars unwrapped, others as text."""
    if value is None or value.__class__ in _PLAIN_TYPES:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            value = item()
        except (TypeError, ValueError):
            return str(value)
    if value is None or isinstance(value, _PLAIN_TYPES):
        return value
    return str(value)


def write_cell(ws: Worksheet, row: int, col: int, value: Any, fmt: Format | None) -> None:
    """One cell, its type kept; None, NaN, inf and "" are blank (a styled blank when ``fmt``)."""
    value = plain(value)
    if isinstance(value, bool):
        ws.write_boolean(row, col, value, fmt)
    elif isinstance(value, (int, float)) and math.isfinite(value):
        ws.write_number(row, col, value, fmt)
    elif isinstance(value, str) and value:
        ws.write_string(row, col, value, fmt)
    elif fmt is not None:
        ws.write_blank(row, col, None, fmt)


def _write_rows(ws: Worksheet, rows: Iterable[Sequence[Any]]) -> None:
    """Unstyled rows from the sheet's second row on: :func:`write_cell`'s fast path."""
    number, string, boolean = ws.write_number, ws.write_string, ws.write_boolean
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row):
            kind = value.__class__
            if kind is float:
                if value - value == 0.0:  # finite: NaN and inf stay blank
                    number(r, c, value)
            elif kind is str:
                if value:
                    string(r, c, value)
            elif kind is int:
                number(r, c, value)
            elif kind is bool:
                boolean(r, c, value)
            elif value is not None:
                write_cell(ws, r, c, value, None)


def write_table(
    wb: Workbook,
    name: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    style: RowStyle | None = None,
) -> Worksheet:
    """A sheet: bold filled header, the rows, frozen header, autofilter, widths from the content.

    Args:
        wb: The workbook.
        name: Sheet name; ``Summary`` also freezes its first column.
        header: Column names.
        rows: Values, one sequence per row in ``header`` order, written in one pass.
        style: Formats of a row's cells; None: all unformatted (the fast path).

    Returns:
        The sheet.
    """
    ws = wb.add_worksheet(name)
    for col, width in enumerate(column_widths(header, rows)):
        ws.set_column(col, col, width)
    header_format = wb.add_format(_HEADER_STYLE)
    for col, title in enumerate(header):
        ws.write_string(0, col, str(title), header_format)
    if style is None:
        _write_rows(ws, rows)
    else:
        for r, row in enumerate(rows, start=1):
            for c, (value, fmt) in enumerate(zip(row, style(row), strict=False)):
                write_cell(ws, r, c, value, fmt)
    ws.freeze_panes(1, 1 if name == "Summary" else 0)
    if len(header):
        ws.autofilter(0, 0, len(rows), len(header) - 1)
    return ws


def summary_style(wb: Workbook, header: Sequence[str]) -> RowStyle:
    """The Summary's number formats by column; a failed slide's whole row filled red."""
    names = [
        SUMMARY_NUMBER_FORMATS.get(h) or ("0.0000" if h.endswith("_area_fraction") else None)
        for h in header
    ]
    numbers = {n: wb.add_format({"num_format": n}) for n in set(names) if n}
    reds = {
        n: wb.add_format({**_FAILED_STYLE, **({"num_format": n} if n else {})}) for n in set(names)
    }
    normal = [numbers[n] if n else None for n in names]
    failed = [reds[n] for n in names]
    status = list(header).index("status")
    return lambda row: failed if row[status] == "failed" else normal


def percent_bar_chart(
    wb: Workbook,
    ws: Worksheet,
    series: range,
    n_rows: int,
    title: str,
    value_title: str,
) -> None:
    """A percent-stacked horizontal bar chart below the table, one bar per row.

    Args:
        wb: The workbook.
        ws: The sheet holding the table (header in row 1, categories in column A).
        series: The series' columns (0-based); each header names its series.
        n_rows: Table rows below the header.
        title: Chart title.
        value_title: Title of the value (percent) axis.
    """
    chart = wb.add_chart({"type": "bar", "subtype": "percent_stacked"})
    if chart is None:  # an unknown chart type; cannot happen for "bar"
        return
    for col in series:
        chart.add_series(
            {
                "name": [ws.name, 0, col],
                "categories": [ws.name, 1, 0, n_rows, 0],
                "values": [ws.name, 1, col, n_rows, col],
            }
        )
    chart.set_title({"name": title})
    chart.set_x_axis({"name": value_title})  # a bar chart's x axis is its value axis
    height_cm = max(7.5, 0.6 * n_rows + 4)
    chart.set_size({"width": round(18 * _PX_PER_CM), "height": round(height_cm * _PX_PER_CM)})
    ws.insert_chart(n_rows + 3, 0, chart)
