"""A run ledger damaged beyond its header: ``process`` and ``status`` say what is wrong.

One page of a real ledger (a table's or an index's) is overwritten, as a
failing disk or a careless copy would; both commands must exit 2 with a
message naming the file, the integrity check and the ways out (a backup, or
moving the file aside), never a raw ``sqlite3.DatabaseError``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smearscan.cli import app
from smearscan.ledger import Ledger, LedgerError
from smearscan.synth import generate_field, write_field

runner = CliRunner()


def _ledger_with_rows(tmp_path: Path) -> Path:
    """A ledger of one finished run over five slides, checkpointed into the main file."""
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as ledger:
        run = ledger.start_run({"command": "process"})
        for i in range(5):
            slide = tmp_path / f"s{i}.png"
            slide.write_bytes(bytes([i]) * 100)
            row = ledger.mark_running(ledger.file_identity(slide), "m", "c", "p", run_id=run)
            ledger.mark_done(row, zarr_path=f"/o.zarr/s{i}", seconds=1.0)
        ledger.finish_run(run)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def _overwrite_page_of(path: Path, name: str) -> None:
    """Overwrite the root page of table or index ``name`` with 0xFF bytes."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    conn.close()
    assert root > 1  # beyond the header page
    with path.open("r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xff" * page_size)


def _says_what_to_do(text: str, ledger: Path) -> None:
    assert f"ledger {ledger} is damaged" in text
    assert "PRAGMA integrity_check" in text and "backup" in text
    assert f"mv {ledger} {ledger}.damaged" in text
    assert "Traceback" not in text and "DatabaseError" not in text


@pytest.mark.parametrize("page", ["slides", "slides_updated"])
def test_damaged_ledger_process_and_status_exit_2(tmp_path: Path, page: str) -> None:
    ledger = _ledger_with_rows(tmp_path)
    _overwrite_page_of(ledger, page)

    with pytest.raises(LedgerError, match="is damaged"):
        Ledger.open(ledger)

    status = runner.invoke(app, ["status", "--ledger", str(ledger)])
    assert status.exit_code == 2, (status.output, status.exception)
    _says_what_to_do(status.stderr, ledger)

    slide = tmp_path / "in" / "f.png"
    write_field(generate_field(3, 300, 250), slide)
    out = tmp_path / "out" / "r.xlsx"
    args = ["process", str(slide), "--out", str(out), "--model", "classical"]
    args += ["--classifier", "rules", "--ledger", str(ledger), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    _says_what_to_do(result.stderr, ledger)
    assert not out.exists()  # nothing processed
