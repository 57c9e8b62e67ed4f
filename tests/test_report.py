"""The xlsx report and the Parquet cell table, from constructed results."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

import smearscan.report as report_module
from smearscan.report import (
    CELLS_COLUMNS,
    SUMMARY_COLUMNS,
    cells_frame,
    cells_rows,
    write_cells_table,
    write_report,
)
from smearscan.results import SlideResult


def _cell(slide: str, cell_id: int, cell_type: str) -> dict:
    return {
        "slide": slide,
        "cell_id": cell_id,
        "centroid_x": 10.0 * cell_id,
        "centroid_y": 5.0,
        "bbox_x0": 0,
        "bbox_y0": 0,
        "bbox_x1": 9,
        "bbox_y1": 9,
        "cell_type": cell_type,
        "type_confidence": 0.9,
        "blast_probability": 0.6 if cell_type == "blast" else 0.01,
        "is_blast": cell_type == "blast",
        "touches_edge": False,
        "area_um2": 80.0 + cell_id,
    }


def _results(tmp_path: Path) -> list[SlideResult]:
    a_types = ["neutrophil", "neutrophil", "lymphocyte", "blast"]
    a = SlideResult(
        slide="run1/a.jpg",
        path=str(tmp_path / "a.jpg"),
        width=100,
        height=80,
        pixel_size_um=0.1,
        wbc_count=4,
        rbc_count=300,
        platelet_count=12,
        cell_counts={"neutrophil": 2, "lymphocyte": 1, "blast": 1},
        cells=[_cell("run1/a.jpg", i + 1, t) for i, t in enumerate(a_types)],
        mask_path=str(tmp_path / "r.zarr" / "a"),
    )
    b = SlideResult(
        slide="b.png",
        path=str(tmp_path / "b.png"),
        wbc_count=0,
        rbc_count=10,
        platelet_count=0,
        cell_counts={},
    )
    c = SlideResult(
        slide="c.tif",
        path=str(tmp_path / "c.tif"),
        status="failed",
        error_stage="read",
        error="c.tif: empty file (0 bytes)",
    )
    return [a, b, c]


def test_report_sheets_counts_and_cell_table(tmp_path: Path):
    report = write_report(tmp_path / "r.xlsx", _results(tmp_path), {"model": "classical"})
    wb = openpyxl.load_workbook(report)
    assert wb.sheetnames == ["Summary", "Cells", "Differential", "Run", "Errors"]
    assert wb["Summary"].freeze_panes == "B2" and wb["Cells"].freeze_panes == "A2"
    assert len(wb["Differential"]._charts) == 1

    summary = pd.read_excel(report, sheet_name="Summary").set_index("slide")
    cells = pd.read_excel(report, sheet_name="Cells")
    assert list(summary.columns[: len(SUMMARY_COLUMNS) - 1]) == list(SUMMARY_COLUMNS[1:])
    assert list(cells.columns[: len(CELLS_COLUMNS)]) == list(CELLS_COLUMNS)
    a = summary.loc["run1/a.jpg"]
    assert a["wbc_count"] == 4 == (cells["slide"] == "run1/a.jpg").sum()
    assert a["neutrophil"] == 2 and a["blast_count"] == 1 and a["blast_percent"] == 25.0
    assert a["mask_path"] == "r.zarr/a"  # relative to the report
    assert summary.loc["b.png", "wbc_count"] == 0 and pd.isna(summary.loc["b.png", "blast_percent"])
    assert summary.loc["c.tif", "status"] == "failed" and pd.isna(summary.loc["c.tif", "wbc_count"])

    differential = pd.read_excel(report, sheet_name="Differential").set_index("group")
    assert differential.loc["run1/a.jpg", "neutrophil_percent"] == 50.0
    errors = pd.read_excel(report, sheet_name="Errors")
    assert errors.to_dict("records") == [
        {"slide": "c.tif", "stage": "read", "message": "c.tif: empty file (0 bytes)"}
    ]
    table = pd.read_parquet(tmp_path / "r_cells.parquet")
    pd.testing.assert_frame_equal(
        table.drop(columns="is_blast").reset_index(drop=True),
        cells.drop(columns="is_blast"),
        check_dtype=False,
    )


def test_no_cells_still_writes_every_sheet(tmp_path: Path):
    report = write_report(tmp_path / "r.xlsx", [], {})
    assert openpyxl.load_workbook(report).sheetnames[1] == "Cells"
    assert list(pd.read_excel(report, sheet_name="Cells").columns) == list(CELLS_COLUMNS)
    assert len(pd.read_parquet(tmp_path / "r_cells.parquet")) == 0


def _hostile_results(tmp_path: Path) -> list[SlideResult]:
    """Formula-, link- and number-looking text, NaN, inf, missing values, a failed slide."""
    cells = [
        {**_cell("=cmd|' /C calc'!A0", 1, "neutrophil"), "centroid_x": float("nan")},
        {**_cell("=cmd|' /C calc'!A0", 2, "blast"), "centroid_y": float("inf"), "note": "=1+1"},
        {k: v for k, v in _cell("=cmd|' /C calc'!A0", 3, "lymphocyte").items() if k != "area_um2"},
    ]
    ok = SlideResult(
        slide="=cmd|' /C calc'!A0",
        path=str(tmp_path / "=cmd.png"),
        width=10,
        height=5,
        pixel_size_um=float("nan"),
        wbc_count=3,
        rbc_count=1,
        platelet_count=0,
        cell_counts={"neutrophil": 1, "blast": 1, "lymphocyte": 1},
        cells=cells,
        class_fractions={"rbc": 0.25},
        quality={"focus": float("inf")},
        notes=["http://example.com", "0123"],
        seconds=1.23456,
    )
    failed = SlideResult(
        slide="bad.png",
        path=str(tmp_path / "bad.png"),
        status="failed",
        error_stage="read",
        error='=HYPERLINK("http://x")',
    )
    return [ok, failed]


def test_text_stays_text_and_nan_inf_are_empty(tmp_path: Path):
    run_info = {"formula": "=1+1", "url": "http://example.com", "zero": "0123", "none": None}
    report = write_report(tmp_path / "r.xlsx", _hostile_results(tmp_path), run_info)
    wb = openpyxl.load_workbook(report)
    for ws in wb:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (ws.title, cell.coordinate, cell.value)
                assert cell.hyperlink is None, (ws.title, cell.coordinate)
    summary = pd.read_excel(report, sheet_name="Summary").set_index("slide")
    ok = summary.loc["=cmd|' /C calc'!A0"]
    assert ok["notes"] == "http://example.com; 0123"
    assert pd.isna(ok["pixel_size_um"]) and pd.isna(ok["quality_focus"])
    cells = pd.read_excel(report, sheet_name="Cells")
    assert cells["slide"].tolist() == ["=cmd|' /C calc'!A0"] * 3
    assert pd.isna(cells.loc[0, "centroid_x"]) and pd.isna(cells.loc[1, "centroid_y"])
    assert cells.loc[1, "note"] == "=1+1" and pd.isna(cells.loc[2, "area_um2"])
    assert cells["is_blast"].tolist() == [False, True, False]
    run = pd.read_excel(report, sheet_name="Run", dtype=object).set_index("key")["value"]
    assert run["formula"] == "=1+1" and run["zero"] == "0123" and pd.isna(run["none"])
    errors = pd.read_excel(report, sheet_name="Errors")
    assert errors["message"].tolist() == ['=HYPERLINK("http://x")']


def test_styles_formats_panes_filter_and_chart(tmp_path: Path):
    report = write_report(tmp_path / "r.xlsx", _results(tmp_path) + _hostile_results(tmp_path), {})
    wb = openpyxl.load_workbook(report)
    summary = wb["Summary"]
    header = [c.value for c in summary[1]]
    for ws in wb:
        top = ws[1]
        assert all(c.font.b and c.fill.fgColor.rgb.endswith("DDE6F0") for c in top), ws.title
        assert ws.freeze_panes == ("B2" if ws.title == "Summary" else "A2")
        assert ws.auto_filter.ref == ws.dimensions, ws.title
    assert summary.column_dimensions["A"].width >= len("=cmd|' /C calc'!A0")
    rows = {row[0].value: row for row in summary.iter_rows(min_row=2)}
    for slide in ("c.tif", "bad.png"):  # failed: the whole row red
        assert all(c.fill.fgColor.rgb.endswith("F8D7DA") for c in rows[slide]), slide
    assert not any(c.fill.fill_type for c in rows["run1/a.jpg"])
    a = dict(zip(header, rows["run1/a.jpg"], strict=True))
    assert a["pixel_size_um"].number_format == "0.0000"
    assert a["blast_percent"].number_format == "0.0"
    assert a["seconds"].number_format == "0.00"
    assert a["model_pixel_size_um"].number_format == "0.00"
    assert (
        dict(zip(header, rows["=cmd|' /C calc'!A0"], strict=True))[
            "rbc_area_fraction"
        ].number_format
        == "0.0000"
    )
    (chart,) = wb["Differential"]._charts
    assert chart.type == "bar" and chart.grouping == "percentStacked"
    assert len(chart.series) == 7  # one per WBC type
    assert chart.anchor._from.row == wb["Differential"].max_row + 2  # 0-based: two rows below


def test_no_wbcs_no_chart(tmp_path: Path):
    b = _results(tmp_path)[1]
    report = write_report(tmp_path / "r.xlsx", [b], {})
    assert openpyxl.load_workbook(report)["Differential"]._charts == []


def test_parquet_matches_the_pandas_writer(tmp_path: Path):
    """pyarrow from plain rows writes what ``cells_frame(...).to_parquet`` wrote."""
    import pyarrow.parquet as pq

    results = _results(tmp_path) + _hostile_results(tmp_path)
    write_report(tmp_path / "r.xlsx", results, {})
    ours = pq.read_table(tmp_path / "r_cells.parquet")
    theirs = pq.read_table(write_cells_table(cells_frame(results), tmp_path / "pd.parquet"))
    assert ours.schema.remove_metadata() == theirs.schema.remove_metadata()
    assert ours.to_pylist() == theirs.to_pylist()
    assert ours.column_names[: len(CELLS_COLUMNS)] == list(CELLS_COLUMNS)
    columns, rows = cells_rows(results)
    assert columns == ours.column_names and len(rows) == ours.num_rows == 7


def test_csv_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow: ImportError
    write_report(tmp_path / "r.xlsx", _hostile_results(tmp_path), {})
    assert not (tmp_path / "r_cells.parquet").exists()
    with open(tmp_path / "r_cells.csv", newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    assert header[: len(CELLS_COLUMNS)] == list(CELLS_COLUMNS) and len(rows) == 3
    first = dict(zip(header, rows[0], strict=True))
    assert first["centroid_x"] == "" and first["slide"] == "=cmd|' /C calc'!A0"
    assert dict(zip(header, rows[1], strict=True))["centroid_y"] == "inf"


def test_excel_row_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog):
    import pyarrow.parquet as pq

    monkeypatch.setattr(report_module, "EXCEL_MAX_ROWS", 3)  # header + 2 rows
    with caplog.at_level(logging.WARNING, logger="smearscan.report"):
        report = write_report(tmp_path / "r.xlsx", _results(tmp_path), {})
    assert "4 cells: the Cells sheet keeps the first 2 rows" in caplog.text
    assert len(pd.read_excel(report, sheet_name="Cells")) == 2
    assert pq.read_table(tmp_path / "r_cells.parquet").num_rows == 4


def test_a_failed_write_leaves_no_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(report_module, "_differential", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_report(tmp_path / "r.xlsx", _results(tmp_path), {})
    assert not (tmp_path / "r.xlsx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r-")]


def test_no_pandas_or_openpyxl_on_the_report_path(tmp_path: Path):
    """Importing the module and writing a report import neither pandas nor openpyxl."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import smearscan.report as r\n"
        "from smearscan.results import SlideResult\n"
        "loaded = [m for m in ('pandas', 'openpyxl', 'torch') if m in sys.modules]\n"
        "cell = dict(slide='a', cell_id=1, cell_type='blast', area_um2=1.5, is_blast=True)\n"
        "res = SlideResult(slide='a', path='a', wbc_count=1, cell_counts={'blast': 1},"
        " cells=[cell])\n"
        f"r.write_report(Path({str(tmp_path / 'r.xlsx')!r}), [res], {{}})\n"
        "print(loaded, [m for m in ('pandas', 'openpyxl', 'torch') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["[]", "[]"], done.stdout + done.stderr
    assert (tmp_path / "r_cells.parquet").exists()
