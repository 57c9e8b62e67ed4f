"""OUT_cells.parquet carries the run's provenance in its schema metadata (key ``smearscan``,
a JSON object): versions, model and classifier names and sha256, the run's start time."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from smearscan import __version__
from smearscan.cli import app
from smearscan.report import write_cells_table
from smearscan.synth import generate_field, write_field

runner = CliRunner()


def _provenance(path: Path) -> dict[str, object]:
    metadata = pq.read_schema(path).metadata or {}
    assert b"smearscan" in metadata, f"no provenance in {path}: {sorted(metadata)}"
    value = json.loads(metadata[b"smearscan"].decode("utf-8"))
    assert isinstance(value, dict)
    return value


def test_parquet_of_a_run_records_versions_models_and_start(tmp_path: Path) -> None:
    write_field(generate_field(3, width=500, height=400, pixel_size_um=0.25), tmp_path / "f.png")
    out = tmp_path / "out" / "report.xlsx"
    result = runner.invoke(app, ["process", str(tmp_path / "f.png"), "--out", str(out),
                                 "--model", "classical", "--classifier", "rules",
                                 "--pixel-size", "0.25", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    cells = out.with_name("report_cells.parquet")
    provenance = _provenance(cells)
    run = pd.read_excel(out, sheet_name="Run").set_index("key")["value"]
    assert provenance["version.smearscan"] == __version__
    for key in ("model", "model_sha256", "classifier", "classifier_sha256", "started", "host"):
        assert provenance[key] == run[key], key
    assert provenance["model"] == "classical" and provenance["classifier"] == "rules"
    assert "param.tiling.overlap_px" in provenance
    assert len(pq.read_table(cells)) > 0  # the rows are still there


def test_a_dataframe_table_gets_it_too_as_strict_json(tmp_path: Path) -> None:
    frame = pd.DataFrame({"slide": ["a.png"], "cell_id": [1]})
    record = {"model": "m", "started": "2026-01-01T02:00:00", "score": math.nan, "path": tmp_path}
    path = write_cells_table(frame, tmp_path / "t_cells.parquet", record)
    assert _provenance(path) == {"model": "m", "started": "2026-01-01T02:00:00",
                                 "score": None, "path": str(tmp_path)}  # fmt: skip
    assert b"pandas" in (pq.read_schema(path).metadata or {})  # pandas' own metadata kept
    assert pq.read_table(path).to_pandas().equals(frame)
