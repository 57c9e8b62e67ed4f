"""The spreadsheet report ``OUT.xlsx``. Formatting only: no analysis here.

Sheets (DESIGN.md output contract):

* ``Summary``: one row per field image; the contract's columns first, then
  extra columns (its patient/slide ``group`` and the group's flags, how the
  pixel size was obtained, timings, class area fractions, the image-quality
  measures ``quality_*`` at the model scale).
* ``Cells``: one row per white cell (contract columns, then morphometry);
  the same rows go to ``OUT_cells.parquet`` (CSV without pyarrow).
* ``Differential``: one row per patient/slide group (``--group-by``; an
  ungrouped field is its own group): the fields' counts added up, percentages
  per type, blast count and percentage, the group flags, with a chart.
* ``Run``: versions, model, every parameter, start/end time, host.
* ``Errors``: one row per slide not ok (failed, or skipped: not run, with why): slide,
  stage, message.

The workbook is written with XlsxWriter (:mod:`smearscan.report_sheets`):
it writes a cell in a few microseconds where openpyxl took 10-25, and in its
``constant_memory`` mode it streams each row to disk instead of keeping a
cell object per value. Text is always text (a file named ``=cmd|...`` is no
formula); None, NaN and the infinities are empty cells.

Neither pandas nor openpyxl is imported: a nightly re-run with nothing new
to process must start and finish quickly, and importing them took longer
than writing the report. :func:`write_report` works on plain rows
(:func:`cells_rows`); :func:`cells_frame` (a DataFrame, for callers that
want one) imports pandas when called; the cell table is written with
pyarrow from numpy buffers (``pyarrow.array`` on Python objects would
import pandas).

The workbook and the cell table are written to temporary files and moved
into place, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xlsxwriter.exceptions import FileCreateError

from smearscan.atomic import atomic_write
from smearscan.cell_types import CELL_TYPES
from smearscan.config import ReviewConfig
from smearscan.errors import ReportWriteError
from smearscan.failure_kinds import is_disk_full
from smearscan.flags import summarise_groups
from smearscan.percentages import percent_of
from smearscan.report_sheets import (
    new_workbook,
    percent_bar_chart,
    plain,
    summary_style,
    write_table,
)
from smearscan.results import GroupResult, OutputPaths, SlideResult

if TYPE_CHECKING:
    import pandas as pd
    from xlsxwriter.workbook import Workbook

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
    "camera",
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
        camera=result.camera,
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
            blast_percent=percent_of(blasts, result.wbc_count),
            rbc_count=result.rbc_count,
            platelet_count=result.platelet_count,
        )
    for name, fraction in result.class_fractions.items():
        row[f"{name}_area_fraction"] = fraction
    for name, value in result.quality.items():
        row[f"quality_{name}"] = value
    return row


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


def cells_rows(results: Sequence[SlideResult]) -> tuple[list[str], list[list[Any]]]:
    """All Cells rows of a run without pandas: contract columns first, then extra columns.

    Extra columns come in the order they first appear (as in :func:`cells_frame`);
    a value a cell lacks is None.

    Returns:
        The column names and one list of values per cell.
    """
    cells = [row for r in results if r.status == "ok" for row in r.cells]
    contract = set(CELLS_COLUMNS)
    extra = dict.fromkeys(k for row in cells for k in row if k not in contract)
    columns = [*CELLS_COLUMNS, *extra]
    return columns, [[row.get(c) for c in columns] for row in cells]


def cells_frame(results: Sequence[SlideResult]) -> pd.DataFrame:
    """All Cells rows of a run, contract columns first (empty frame with them when none).

    Imports pandas when called; :func:`write_report` uses :func:`cells_rows`.
    """
    import pandas as pd

    rows = [row for r in results if r.status == "ok" for row in r.cells]
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in CELLS_COLUMNS]
    return frame.reindex(columns=[*CELLS_COLUMNS, *extra])


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _arrow_array(values: list[Any]) -> Any:
    """A pyarrow array of Python values, typed as pandas' ``to_parquet`` typed them.

    None and NaN are null; a column of nothing but nulls is float64, integers
    with a null are float64, text is ``large_string``; a column mixing types
    that one Arrow type cannot hold is written as text (pandas raised).

    Built from numpy buffers: converting Python objects with ``pyarrow.array``
    would import pandas (pyarrow looks for pandas types), which this module
    keeps off the report's path.
    """
    import numpy as np
    import pyarrow as pa

    values = [plain(v) for v in values]
    n = len(values)
    valid = [not _is_null(v) for v in values]
    kinds = {v.__class__ for v, ok in zip(values, valid, strict=True) if ok}
    nulls = n - sum(valid)
    bitmap = (
        pa.py_buffer(np.packbits(np.array(valid, dtype=bool), bitorder="little")) if nulls else None
    )
    if not kinds:
        return pa.nulls(n, pa.float64())
    if kinds == {bool}:
        data = np.packbits(
            np.array([bool(v) and ok for v, ok in zip(values, valid, strict=True)], dtype=bool),
            bitorder="little",
        )
        return pa.Array.from_buffers(pa.bool_(), n, [bitmap, pa.py_buffer(data)], null_count=nulls)
    if kinds == {int} and not nulls:
        try:
            return pa.Array.from_buffers(
                pa.int64(), n, [None, pa.py_buffer(np.array(values, dtype=np.int64))], null_count=0
            )
        except OverflowError:
            pass
    elif kinds <= {int, float}:
        data = np.array(
            [v if ok else 0.0 for v, ok in zip(values, valid, strict=True)], dtype=np.float64
        )
        return pa.Array.from_buffers(
            pa.float64(), n, [bitmap, pa.py_buffer(data)], null_count=nulls
        )
    if kinds != {str}:
        log.warning(
            "cell table: a column mixes %s; written as text", sorted(k.__name__ for k in kinds)
        )
    encoded = [
        str(v).encode("utf-8", "replace") if ok else b""
        for v, ok in zip(values, valid, strict=True)
    ]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.large_string(),
        n,
        [bitmap, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
        null_count=nulls,
    )


#: Key of the run's provenance (JSON) in the schema metadata of ``OUT_cells.parquet``.
PARQUET_PROVENANCE_KEY = "smearscan"


def _with_provenance(table: Any, provenance: dict[str, Any] | None) -> Any:
    """``table`` (a pyarrow Table) with ``provenance`` as JSON under :data:`PARQUET_PROVENANCE_KEY`
    in its schema metadata (beside what is there, e.g. pandas' own)."""
    if provenance is None:
        return table
    plain_values = {  # strict JSON: no NaN/inf (null), paths and dates as text
        k: None if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in provenance.items()
    }
    text = json.dumps(plain_values, default=str, ensure_ascii=False, allow_nan=False)
    metadata = dict(table.schema.metadata or {})
    metadata[PARQUET_PROVENANCE_KEY.encode()] = text.encode("utf-8")
    return table.replace_schema_metadata(metadata)


def _write_parquet(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    tmp: Path,
    provenance: dict[str, Any] | None = None,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [_arrow_array([row[i] for row in rows]) for i in range(len(columns))]
    table = pa.Table.from_arrays(arrays, names=list(columns))
    pq.write_table(_with_provenance(table, provenance), tmp)


def _write_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]], tmp: Path) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(["" if _is_null(v) else v for v in map(plain, row)] for row in rows)


def write_cells_table(
    table: tuple[Sequence[str], Sequence[Sequence[Any]]] | pd.DataFrame,
    path: Path,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write the Cells rows to Parquet (or CSV when pyarrow is missing), atomically.

    Args:
        table: ``(columns, rows)`` from :func:`cells_rows`, written with pyarrow
            (no pandas), or a DataFrame from :func:`cells_frame`, written by pandas.
        path: The table's path; its suffix becomes ``.parquet`` or ``.csv``.
        provenance: The run's record (the Run sheet's pairs), stored in a
            Parquet file's schema metadata as JSON under ``"smearscan"``
            (:data:`PARQUET_PROVENANCE_KEY`); a CSV has no place for it.

    Returns:
        The path written (``.parquet`` or ``.csv``).
    """
    try:
        import pyarrow  # noqa: F401

        target = path.with_suffix(".parquet")
    except ImportError:
        target = path.with_suffix(".csv")
    parquet = target.suffix == ".parquet"
    if not isinstance(table, tuple):  # a DataFrame
        frame = table
        if parquet and provenance is not None:
            return atomic_write(target, lambda tmp: _write_frame(frame, tmp, provenance))
        write = frame.to_parquet if parquet else frame.to_csv
        return atomic_write(target, lambda tmp: write(tmp, index=False))
    columns, rows = table
    if parquet:
        return atomic_write(target, lambda tmp: _write_parquet(columns, rows, tmp, provenance))
    return atomic_write(target, lambda tmp: _write_csv(columns, rows, tmp))


def _write_frame(frame: pd.DataFrame, tmp: Path, provenance: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(_with_provenance(table, provenance), tmp)


#: Differential columns before the per-type counts.
DIFFERENTIAL_LEAD: tuple[str, ...] = ("group", "fields", "fields_failed", "wbc_count")


def differential_rows(groups: Sequence[GroupResult]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the Differential sheet, one row per group.

    Percentages are of all WBCs counted in the group (None without WBCs), by
    :func:`~smearscan.percentages.percent_of`; ``blast_count`` and
    ``blast_percent`` are the ``blast`` type's columns (one each).
    """
    header = [*DIFFERENTIAL_LEAD]
    header += [f"{t}_count" for t in CELL_TYPES] + [f"{t}_percent" for t in CELL_TYPES]
    header += ["flags"]
    rows = []
    for g in groups:
        total = g.wbc_count
        counts = [g.cell_counts.get(t, 0) for t in CELL_TYPES]
        percents = [percent_of(c, total) for c in counts]
        rows.append(
            [
                g.group,
                g.fields,
                g.fields_failed,
                total,
                *counts,
                *percents,
                ", ".join(g.flags),
            ]
        )
    return header, rows


def _differential(wb: Workbook, groups: Sequence[GroupResult]) -> None:
    """Counts and percentages of WBC types per group, with a percent-stacked bar chart."""
    header, rows = differential_rows(groups)
    ws = write_table(wb, "Differential", header, rows)
    if not any(g.wbc_count for g in groups):
        return
    first = len(DIFFERENTIAL_LEAD) + len(CELL_TYPES)  # first percent column (0-based)
    percent_bar_chart(
        wb,
        ws,
        range(first, first + len(CELL_TYPES)),
        len(rows),
        "WBC differential",
        "% of WBCs counted",
    )


def _run_value(value: Any) -> Any:
    return value if isinstance(value, (int, float, str)) or value is None else str(value)


def _not_written(path: Path, exc: Exception) -> ReportWriteError:
    """The error of a report that could not be written: what happened and what to do."""
    cause = exc.__context__ if isinstance(exc, FileCreateError) and exc.__context__ else exc
    what = "the disk is full: free space in" if is_disk_full(exc) else "check"
    return ReportWriteError(
        f"report {path} not written ({cause}); {what} {path.parent} and run again "
        "(with the run ledger the slides done are not processed again)"
    )


def _write_files(
    path: Path,
    table: tuple[Sequence[str], Sequence[Sequence[Any]]],
    run_info: dict[str, Any],
    write: Callable[[Path], None],
) -> None:
    """Write ``OUT_cells.parquet`` from ``table``, then ``OUT.xlsx`` with ``write``, atomically.

    Raises:
        ReportWriteError: Either could not be written (a full disk...).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_cells_table(table, OutputPaths.for_report(path).cells, run_info)
        atomic_write(path, write)
    except (OSError, FileCreateError) as exc:  # XlsxWriter wraps the OSError of its zip
        raise _not_written(path, exc) from exc


def write_report(
    path: Path,
    results: Sequence[SlideResult],
    run_info: dict[str, Any],
    groups: Sequence[GroupResult] | None = None,
) -> Path:
    """Write ``OUT.xlsx`` and ``OUT_cells.parquet`` atomically, with XlsxWriter and pyarrow.

    XlsxWriter (``constant_memory``) writes the Cells sheet several times
    faster than openpyxl did, in memory that does not grow with the rows;
    no pandas is imported.

    Args:
        path: Report path (``.xlsx``).
        results: One result per slide, in input order.
        run_info: Flat ``{key: value}`` pairs for the Run sheet.
        groups: The Differential's groups (:func:`smearscan.flags.summarise_groups`);
            None: every field its own group, default thresholds.

    Returns:
        The report path.

    Raises:
        ReportWriteError: Either file could not be written (a full disk...).
    """
    path = Path(path)
    base = path.parent.resolve()
    if groups is None:
        groups = summarise_groups(results, ReviewConfig())
    summary = [summary_row(r, base) for r in results]
    extras = sorted({k for r in summary for k in r} - set(SUMMARY_COLUMNS) - set(EXTRA_COLUMNS))
    header = [*SUMMARY_COLUMNS, *EXTRA_COLUMNS, *extras]
    summary_values = [[r.get(c) for c in header] for r in summary]
    columns, cells = cells_rows(results)
    if len(cells) >= EXCEL_MAX_ROWS:
        log.warning(
            "%d cells: the Cells sheet keeps the first %d rows, %s has them all",
            len(cells),
            EXCEL_MAX_ROWS - 1,
            path.with_name(f"{path.stem}_cells.*"),
        )
    run_rows = [[k, _run_value(v)] for k, v in run_info.items()]
    error_rows = [  # every slide not ok: failed, and skipped with the reason
        [r.slide, r.error_stage or r.status, r.error] for r in results if r.status != "ok"
    ]

    def write(tmp: Path) -> None:
        wb = new_workbook(tmp)
        try:
            write_table(wb, "Summary", header, summary_values, summary_style(wb, header))
            write_table(wb, "Cells", columns, cells[: EXCEL_MAX_ROWS - 1])
            _differential(wb, groups)
            write_table(wb, "Run", ["key", "value"], run_rows)
            write_table(wb, "Errors", ["slide", "stage", "message"], error_rows)
        except BaseException:
            try:  # release XlsxWriter's temporary files; the original error counts
                wb.close()
            except Exception:
                log.debug("closing the half-written workbook failed", exc_info=True)
            raise
        wb.close()

    _write_files(path, (columns, cells), run_info, write)
    log.info(
        "report written: %s (%d slides, %d failed)",
        path,
        len(results),
        sum(r.status == "failed" for r in results),
    )
    return path
