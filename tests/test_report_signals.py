"""SIGTERM while the report is being written: the report is finished, the run exits 1.

A real ``smearscan process`` re-run over slides its ledger has done (so the run is
all report), signalled at the moment its hidden temporary ``.r-XXXXXXXX.xlsx``
exists (found by polling for it, not by sleeping). A second signal aborts at
once, and leaves no temporary file: neither the hidden xlsx beside the report
nor XlsxWriter's row files in the temp folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openpyxl
import pytest

from smearscan.synth import generate_field, write_field

#: Attempts per test: a run whose report was written before the poll saw it is redone.
ATTEMPTS = 15


@pytest.fixture(scope="module")
def done_slides(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three slides processed once: ``(folder, ledger)``; re-runs only write the report."""
    root = tmp_path_factory.mktemp("report_signal")
    slides = root / "slides"
    slides.mkdir()
    for seed in range(3):
        write_field(generate_field(seed, 640, 480), slides / f"f{seed}.png")
    for extra in slides.glob("*_truth.*"):
        extra.unlink()
    ledger = root / "ledger.sqlite"
    proc = subprocess.run(_command(slides, root / "first.xlsx", ledger), capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return slides, ledger


def _command(slides: Path, report: Path, ledger: Path) -> list[str]:
    return [
        sys.executable, "-m", "smearscan", "process", str(slides), "--out", str(report),
        "--model", "classical", "--classifier", "rules", "--pixel-size", "0.1",
        "--workers", "1", "--ledger", str(ledger),
    ]  # fmt: skip


def _start(slides: Path, report: Path, ledger: Path, tmpdir: Path) -> subprocess.Popen[bytes]:
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir)}  # XlsxWriter's row files go here
    return subprocess.Popen(
        _command(slides, report, ledger),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def _temp_reports(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".r-") and n.endswith(".xlsx")]


def _wait_for(proc: subprocess.Popen[bytes], found: object) -> bool:
    """Poll (about every 0.2 ms) until ``found()`` is true; False when the process ended first."""
    while proc.poll() is None:
        if found():  # type: ignore[operator]
            return True
        time.sleep(0.0002)
    return False


def test_sigterm_while_the_report_is_written_finishes_it(
    done_slides: tuple[Path, Path], tmp_path: Path
):
    slides, ledger = done_slides
    for attempt in range(ATTEMPTS):
        out = tmp_path / f"try{attempt}"
        out.mkdir()
        report = out / "r.xlsx"
        proc = _start(slides, report, ledger, out / "tmp")
        caught = _wait_for(proc, lambda out=out: _temp_reports(out))
        if caught:
            proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        if not caught:
            assert proc.returncode == 0, stderr.decode()
            continue  # written before the poll saw it: again
        assert proc.returncode == 1, stderr.decode()
        wb = openpyxl.load_workbook(report, read_only=True)
        assert wb.sheetnames == ["Summary", "Cells", "Differential", "Run", "Errors"]
        wb.close()
        assert _temp_reports(out) == []
        assert not [n for n in os.listdir(out) if n.startswith(".")], os.listdir(out)
        assert os.listdir(out / "tmp") == []
        log = report.with_suffix(".log").read_text(encoding="utf-8")
        assert "SIGTERM: stopping once the report is written" in log
        assert "report written" in log and "stopped by SIGTERM" in log
        return
    pytest.fail(f"the report's temporary file was never seen in {ATTEMPTS} runs")


def test_second_sigterm_while_the_report_is_written_aborts_without_temp_files(
    done_slides: tuple[Path, Path], tmp_path: Path
):
    slides, ledger = done_slides
    for attempt in range(ATTEMPTS):
        out = tmp_path / f"try{attempt}"
        out.mkdir()
        report = out / "r.xlsx"
        log = report.with_suffix(".log")
        proc = _start(slides, report, ledger, out / "tmp")

        def planned(log: Path = log) -> bool:  # the handler is installed by then
            return log.is_file() and "slide(s) to process, " in log.read_text(encoding="utf-8")

        if not _wait_for(proc, planned):
            raise AssertionError(proc.communicate()[1].decode())
        proc.send_signal(signal.SIGTERM)  # the first: the run stops after the report
        caught = _wait_for(proc, lambda out=out: _temp_reports(out))
        if caught:
            proc.send_signal(signal.SIGTERM)  # the second, mid-write: abort at once
        _, stderr = proc.communicate(timeout=120)
        if not caught:
            assert proc.returncode == 1, stderr.decode()
            continue
        assert proc.returncode == -signal.SIGTERM, stderr.decode()
        assert "aborting now" in log.read_text(encoding="utf-8")
        if report.exists():  # the signal came just after the rename: a whole report
            openpyxl.load_workbook(report, read_only=True).close()
        assert not [n for n in os.listdir(out) if n.startswith(".")], os.listdir(out)
        assert os.listdir(out / "tmp") == []
        return
    pytest.fail(f"the report's temporary file was never seen in {ATTEMPTS} runs")
