"""SIGTERM/SIGINT stop a real ``smearscan process`` after the slide in progress.

The report is still written: the slides finished before the signal are ``ok``,
the others ``skipped`` with the reason, none is ``failed``, and the exit code
is 1. With a ledger, the skipped slides are processed by the next run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from smearscan.synth import generate_field, write_field

N_SLIDES = 5


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stop_slides")
    for seed in range(N_SLIDES):
        write_field(generate_field(seed, 1600, 1200), root / f"field{seed}.png")
    for extra in root.glob("*_truth.*"):
        extra.unlink()
    return root


def _start(folder: Path, report: Path, ledger: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "smearscan", "process", str(folder), "--out", str(report),
        "--model", "classical", "--classifier", "rules", "--pixel-size", "0.1",
        "--no-previews", "--workers", "1", "--ledger", str(ledger),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_first_slide(log: Path, proc: subprocess.Popen[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and f"[1/{N_SLIDES}]" in log.read_text(encoding="utf-8"):
            return
        time.sleep(0.05)
    raise AssertionError(f"no slide finished in {timeout_s} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_after_the_slide_in_progress(folder: Path, tmp_path: Path, sig: int):
    report, ledger = tmp_path / "r.xlsx", tmp_path / "ledger.sqlite"
    proc = _start(folder, report, ledger)
    _wait_for_first_slide(report.with_suffix(".log"), proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    summary = pd.read_excel(report, sheet_name="Summary")
    status = summary["status"].tolist()
    assert "failed" not in status
    assert status.count("ok") >= 1 and status.count("skipped") >= 1, status
    assert len(status) == N_SLIDES
    assert "stopped by" in (tmp_path / "r.log").read_text(encoding="utf-8")

    rerun = _start(folder, tmp_path / "again.xlsx", ledger)
    assert rerun.wait(timeout=300) == 0
    again = pd.read_excel(tmp_path / "again.xlsx", sheet_name="Summary")
    assert again["status"].tolist() == ["ok"] * N_SLIDES
