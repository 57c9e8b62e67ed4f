"""One run per output: a second ``smearscan process`` on the same report waits or exits 3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from smearscan.runlock import LockedError, RunLock, ledger_lock_path, lock_path_for
from smearscan.synth import generate_field, write_field

EXIT_LOCKED = 3


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "smearscan", *args]


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_field(generate_field(5, 500, 400), tmp_path_factory.mktemp("in") / "f.png")[0]


def _process(field: Path, report: Path, *extra: str) -> list[str]:
    return _cli(
        "process", str(field), "--out", str(report), "--model", "classical",
        "--classifier", "rules", "--pixel-size", "0.1", "--no-previews", "--quiet", *extra,
    )  # fmt: skip


def test_a_locked_output_exits_3_naming_the_holder_and_writes_nothing(field, tmp_path):
    report = tmp_path / "out" / "r.xlsx"
    with RunLock(lock_path_for(report)):
        done = subprocess.run(_process(field, report), capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_LOCKED, done.stderr
    assert f"pid {os.getpid()}" in done.stderr and "--wait" in done.stderr
    assert not report.exists() and not report.with_suffix(".log").exists()


def test_wait_runs_once_the_holder_is_done(field, tmp_path):
    report = tmp_path / "out" / "r.xlsx"
    lock = RunLock(lock_path_for(report)).acquire()
    threading.Timer(2.0, lock.release).start()
    started = time.monotonic()
    done = subprocess.run(
        _process(field, report, "--wait", "60"), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 2.0
    assert report.is_file()


def test_two_concurrent_runs_one_proceeds_the_other_exits_3(field, tmp_path):
    report = tmp_path / "out" / "r.xlsx"
    runs = [
        subprocess.Popen(_process(field, report), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    codes = sorted(p.wait(timeout=180) for p in runs)
    assert codes == [0, EXIT_LOCKED]
    assert report.is_file()


def test_the_lock_dies_with_its_process(tmp_path):
    path = tmp_path / "r.lock"
    code = (
        "import sys, time; from smearscan.runlock import RunLock; "
        f"RunLock({str(path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            RunLock(path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        RunLock(path, wait_s=5).acquire().release()  # no stale lock after SIGKILL
    finally:
        holder.kill()


def test_negative_wait_is_refused(tmp_path):
    with pytest.raises(ValueError, match="wait"):
        RunLock(tmp_path / "x.lock", wait_s=-1)


def test_two_runs_on_one_ledger_with_different_outputs_one_exits_3(field, tmp_path):
    ledger = tmp_path / "shared" / "ledger.sqlite"
    holder = RunLock(ledger_lock_path(ledger)).acquire()  # another night's run on this ledger
    try:
        done = subprocess.run(
            _process(field, tmp_path / "b" / "r.xlsx", "--ledger", str(ledger)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.release()
    assert done.returncode == EXIT_LOCKED, done.stderr
    assert "ledger.sqlite.lock" in done.stderr and "--wait" in done.stderr
    assert not ledger.exists()  # the ledger was not touched
    runs = [
        subprocess.Popen(
            _process(field, tmp_path / name / "r.xlsx", "--ledger", str(ledger)),
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("c", "d")
    ]
    assert sorted(p.wait(timeout=180) for p in runs) == [0, EXIT_LOCKED]
