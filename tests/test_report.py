"""The xlsx report and the Parquet cell table, from constructed results."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pandas as pd

from smearscan.report import CELLS_COLUMNS, SUMMARY_COLUMNS, write_report
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
