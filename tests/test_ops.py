"""Operations: JSON log lines (``--log-format json``) and ``smearscan status``."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smearscan.cli import app
from smearscan.console import JsonFormatter
from smearscan.ledger import Ledger, params_hash
from smearscan.synth import generate_field, write_field

runner = CliRunner()

MODEL, CLASSIFIER = "a" * 64, "c" * 64
PARAMS = params_hash({"tile": 512})


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Drop the handlers a CLI run left on the ``smearscan`` logger (their streams close)."""
    yield
    logger = logging.getLogger("smearscan")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True


def _json_lines(text: str) -> list[dict[str, object]]:
    """Every non-empty line of ``text`` parsed as one JSON object."""
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records and all(isinstance(r, dict) for r in records)
    return records


def test_process_log_format_json(tmp_path: Path) -> None:
    slides = tmp_path / "in"
    write_field(generate_field(0, width=600, height=500, pixel_size_um=0.1), slides / "f0.png")
    (slides / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "night" / "r.xlsx"
    result = runner.invoke(
        app,
        [
            "process",
            str(slides),
            "--out",
            str(out),
            "--model",
            "classical",
            "--pixel-size",
            "0.1",
            "--no-previews",
            "--log-format",
            "json",
        ],
    )
    assert result.exit_code == 1, result.output  # the broken slide failed
    records = _json_lines(out.with_suffix(".log").read_text(encoding="utf-8"))
    for record in records:
        assert {"ts", "level", "logger", "message"} <= record.keys()
        stamp = datetime.fromisoformat(str(record["ts"]))
        assert str(record["ts"]).endswith("Z") and stamp.utcoffset() == timedelta(0)
        assert str(record["logger"]).startswith("smearscan")
    errors = [r for r in records if r["level"] == "ERROR"]
    assert any("broken.png" in str(r["message"]) for r in errors), errors
    done = {r["slide"]: r for r in records if r["logger"] == "smearscan.progress" and "slide" in r}
    assert done["f0.png"]["status"] == "ok" and "stage" not in done["f0.png"]
    assert done["broken.png"]["status"] == "failed" and done["broken.png"]["stage"] == "read"
    assert done["broken.png"]["level"] == "ERROR"  # the one line about the failure
    assert any("report written" in str(r["message"]) for r in records)
    console = _json_lines(result.stderr)  # the console too: JSON lines, no rich output
    assert any(r.get("slide") == "broken.png" for r in console)


def test_log_format_text_is_the_default_and_bad_value_is_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["process", str(tmp_path), "--out", str(tmp_path / "r.xlsx"), "--log-format", "xml"]
    )
    assert result.exit_code == 2
    assert not (tmp_path / "r.log").exists()


def test_json_formatter_exception_and_extras() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("bad tile")
    except ValueError:
        record = logging.LogRecord(
            "smearscan.x", logging.ERROR, __file__, 1, "slide %s: ünïcode", ("a b.tif",), None
        )
        record.exc_info = sys.exc_info()
    record.slide, record.stage = "a b.tif", "segment"
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "slide a b.tif: ünïcode"
    assert entry["slide"] == "a b.tif" and entry["stage"] == "segment"
    assert entry["level"] == "ERROR" and entry["logger"] == "smearscan.x"
    assert "Traceback" in entry["exc"] and "ValueError: bad tile" in entry["exc"]
    assert datetime.fromisoformat(entry["ts"]).tzinfo is not None
    assert abs(datetime.fromisoformat(entry["ts"]) - datetime.now(UTC)).total_seconds() < 60


@pytest.fixture()
def ledger_file(tmp_path: Path) -> Path:
    """A ledger with a finished run (2 ok, 1 failed) and an interrupted run (1 left running)."""
    path = tmp_path / "ledger.sqlite"
    files = []
    for name in ("a.png", "b.png", "c.png", "d.png"):
        files.append(tmp_path / name)
        files[-1].write_bytes(name.encode())
    with Ledger.open(path) as ledger:
        run = ledger.start_run({"command": "process"})
        for slide in files[:2]:
            row = ledger.mark_running(
                ledger.file_identity(slide), MODEL, CLASSIFIER, PARAMS, run_id=run
            )
            ledger.mark_done(row, zarr_path="/o.zarr/x", seconds=1.0)
        row = ledger.mark_running(
            ledger.file_identity(files[2]), MODEL, CLASSIFIER, PARAMS, run_id=run
        )
        ledger.mark_failed(row, "read", "truncated file")
        ledger.finish_run(run)
        second = ledger.start_run({"command": "process"})
        ledger.mark_running(
            ledger.file_identity(files[3]), MODEL, CLASSIFIER, PARAMS, run_id=second
        )
    # closing with run 2 unfinished marks it interrupted, d.png stays "running"
    return path


def test_status_text(ledger_file: Path) -> None:
    result = runner.invoke(app, ["status", "--ledger", str(ledger_file)], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert str(ledger_file) in text
    assert "slides: 4 path(s)" in text and "ok 2, failed 1, running 1" in text
    assert "interrupted slides: 1" in text
    lines = text.splitlines()
    run2 = next(line for line in lines if line.strip().startswith("run    2"))
    run1 = next(line for line in lines if line.strip().startswith("run    1"))
    assert lines.index(run2) < lines.index(run1)  # newest first
    assert "interrupted" in run2 and "slides: running 1" in run2
    assert "finished" in run1 and "slides: ok 2, failed 1" in run1


def test_status_json_and_runs(ledger_file: Path) -> None:
    result = runner.invoke(app, ["status", "--ledger", str(ledger_file), "--json", "--runs", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    with Ledger.open(ledger_file) as ledger:
        assert summary == json.loads(json.dumps(ledger.summary(last_runs=1)))
    assert summary["slides"]["ok"] == 2 and summary["interrupted_slides"] == 1
    assert [r["run_id"] for r in summary["runs"]] == [2]
    assert summary["runs"][0]["slides"] == {"running": 1}


def test_status_empty_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger.open(path).close()
    result = runner.invoke(app, ["status", "--ledger", str(path)])
    assert result.exit_code == 0, result.output
    assert "runs: none recorded" in result.stdout


def test_status_missing_or_invalid_ledger_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    result = runner.invoke(app, ["status", "--ledger", str(missing)])
    assert result.exit_code == 2 and "no ledger" in result.stderr
    assert not missing.exists()  # status never creates a ledger

    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    result = runner.invoke(app, ["status", "--ledger", str(text)])
    assert result.exit_code == 2 and "not a smearscan ledger" in result.stderr
    assert text.read_text() == "not a database"

    empty = tmp_path / "empty.sqlite"
    empty.touch()
    result = runner.invoke(app, ["status", "--ledger", str(empty)])
    assert result.exit_code == 2 and empty.stat().st_size == 0

    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    result = runner.invoke(app, ["status", "--ledger", str(other)])
    assert result.exit_code == 2 and "not a smearscan ledger" in result.stderr

    result = runner.invoke(app, ["status", "--ledger", str(tmp_path)])
    assert result.exit_code == 2 and "not a file" in result.stderr

    result = runner.invoke(app, ["status", "--ledger", str(text), "--runs", "0"])
    assert result.exit_code == 2


def test_status_of_a_report_uses_its_default_ledger(ledger_file: Path, tmp_path: Path) -> None:
    report = tmp_path / "night.xlsx"
    (tmp_path / "night_ledger.sqlite").write_bytes(ledger_file.read_bytes())
    result = runner.invoke(app, ["status", "--out", str(report)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "night_ledger.sqlite" in result.output
    both = ["status", "--out", str(report), "--ledger", str(ledger_file)]
    for wrong in (["status"], both):
        assert runner.invoke(app, wrong).exit_code == 2
