"""Tests of the run ledger (:mod:`smearscan.ledger`) on real SQLite files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smearscan.errors import InputError, SmearscanError
from smearscan.ledger import (
    FAILED_REASON,
    INTERRUPTED_REASON,
    MAX_INTERRUPTIONS,
    QUEUED,
    FileIdentity,
    Ledger,
    LedgerError,
    params_hash,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "a" * 64
CLASSIFIER = "c" * 64
PARAMS = params_hash({"tile": 512, "halo": 64})


def _slide(folder: Path, name: str, content: bytes = b"pixels") -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def _run_child(code: str, ledger: Path) -> subprocess.Popen[bytes]:
    """Start a Python child running ``code`` with ``LEDGER`` set to the ledger path."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LEDGER": str(ledger)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env)


def _done(ledger: Ledger, path: Path, run_id: int, model: str = MODEL) -> int:
    identity = ledger.file_identity(path)
    slide_id = ledger.mark_running(identity, model, CLASSIFIER, PARAMS, run_id=run_id)
    ledger.mark_done(slide_id, zarr_path=f"/out.zarr/{path.name}", seconds=1.5)
    return slide_id


def test_schema_created(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.sqlite"
    with Ledger.open(path):
        pass
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "runs", "slides"} <= tables
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    with Ledger.open(path) as ledger:  # reopening an existing ledger
        assert ledger.slides() == []


def test_newer_schema_and_foreign_files_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(LedgerError, match="schema version 99") as info:
        Ledger.open(path)
    assert isinstance(info.value, SmearscanError)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(LedgerError, match="not a usable smearscan ledger"):
        Ledger.open(junk)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (x)")
    conn.close()
    with pytest.raises(LedgerError, match="another program"):
        Ledger.open(other)


def test_params_hash_is_canonical() -> None:
    assert params_hash({"a": 1, "b": [1, 2]}) == params_hash({"b": [1, 2], "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})
    assert params_hash({"p": Path("/x")}) == params_hash({"p": "/x"})
    with pytest.raises(TypeError, match="no JSON form"):
        params_hash({"a": object()})


def test_runs_recorded(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        run_id = ledger.start_run({"command": "process", "inputs": ["/data"]})
        ledger.finish_run(run_id)
        unfinished = ledger.start_run({"command": "process"})
        with pytest.raises(LedgerError, match="no run 999"):
            ledger.finish_run(999)
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        runs = {r["run_id"]: r for r in ledger.summary()["runs"]}
    assert runs[run_id]["status"] == "finished"
    assert runs[run_id]["pid"] == os.getpid()
    assert runs[run_id]["finished_utc"] >= runs[run_id]["started_utc"]
    assert runs[unfinished]["status"] == "interrupted"  # closed without finish_run


def test_unchanged_file_done_and_skipped(tmp_path: Path) -> None:
    slide = _slide(tmp_path, "a.png")
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        identity = ledger.file_identity(slide)
        assert identity.hashed
        assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS) == (True, "new")
        run_id = ledger.start_run({})
        slide_id = ledger.mark_running(identity, MODEL, CLASSIFIER, PARAMS, run_id=run_id)
        ledger.mark_done(slide_id, zarr_path="/o.zarr/a", preview_path="/p/a.png", seconds=2.0)
        again = ledger.file_identity(slide)
        assert not again.hashed
        assert again.sha256 == identity.sha256
        assert ledger.should_process(again, MODEL, CLASSIFIER, PARAMS) == (False, "done")
        assert ledger.should_process(again, MODEL, CLASSIFIER, PARAMS, force=True) == (
            True,
            "forced",
        )
        assert ledger.file_identity(slide, verify=True).hashed
        (row,) = ledger.slides()
    assert (row.status, row.zarr_path, row.preview_path, row.seconds) == (
        "ok",
        "/o.zarr/a",
        "/p/a.png",
        2.0,
    )
    assert (row.path, row.name, row.size_bytes) == (str(slide), "a.png", 6)
    assert row.finished_utc is not None


def test_changed_content_is_changed(tmp_path: Path) -> None:
    slide = _slide(tmp_path, "a.png")
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        _done(ledger, slide, ledger.start_run({}))
        slide.write_bytes(b"PIXELS")  # same size: only the mtime tells
        st = slide.stat()
        os.utime(slide, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        identity = ledger.file_identity(slide)
        assert identity.hashed
        assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS) == (True, "changed")


def test_different_model_or_params_processed_again(tmp_path: Path) -> None:
    slide = _slide(tmp_path, "a.png")
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        _done(ledger, slide, ledger.start_run({}))
        identity = ledger.file_identity(slide)
        assert ledger.should_process(identity, "b" * 64, CLASSIFIER, PARAMS) == (True, "changed")
        assert ledger.should_process(identity, MODEL, "d" * 64, PARAMS) == (True, "changed")
        other = params_hash({"tile": 256})
        assert ledger.should_process(identity, MODEL, CLASSIFIER, other) == (True, "changed")
        _done(ledger, slide, ledger.start_run({}), model="b" * 64)
        assert ledger.should_process(identity, "b" * 64, CLASSIFIER, PARAMS) == (False, "done")
        assert len(ledger.slides()) == 2
        assert len(ledger.slides(latest_per_path=True)) == 1


def test_failed_skipped_unless_retry(tmp_path: Path) -> None:
    slide = _slide(tmp_path, "a.png")
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        identity = ledger.file_identity(slide)
        run_id = ledger.start_run({})
        slide_id = ledger.mark_running(identity, MODEL, CLASSIFIER, PARAMS, run_id=run_id)
        ledger.mark_failed(slide_id, "read", "truncated JPEG", seconds=0.1)
        assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS) == (False, FAILED_REASON)
        assert FAILED_REASON == "failed (use --retry-failed)"
        assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS, retry_failed=True) == (
            True,
            "retry failed",
        )
        (failed,) = ledger.slides(status="failed")
        assert (failed.error_stage, failed.error) == ("read", "truncated JPEG")
        retry = ledger.mark_running(identity, MODEL, CLASSIFIER, PARAMS, run_id=run_id)
        assert retry == slide_id
        ledger.mark_done(retry, zarr_path="/o.zarr/a", seconds=1.0)
        (row,) = ledger.slides()
        assert (row.status, row.attempts, row.error_stage, row.error) == ("ok", 2, "", "")
        with pytest.raises(LedgerError, match="no slide row"):
            ledger.mark_done(12345)
        with pytest.raises(ValueError, match="slide status"):
            ledger.slides(status="bogus")


def test_skipped_row_is_not_done(tmp_path: Path) -> None:
    slide = _slide(tmp_path, "a.png")
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        identity = ledger.file_identity(slide)
        slide_id = ledger.mark_running(
            identity, MODEL, CLASSIFIER, PARAMS, run_id=ledger.start_run({})
        )
        ledger.mark_skipped(slide_id, "excluded by --exclude")
        assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS) == (
            True,
            "skipped before",
        )


def test_file_identity_errors(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        with pytest.raises(InputError, match="cannot be opened"):
            ledger.file_identity(tmp_path / "missing.png")
        with pytest.raises(InputError, match="not a regular file"):
            ledger.file_identity(tmp_path)


def test_slides_since(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        run_id = ledger.start_run({})
        _done(ledger, _slide(tmp_path, "old.png", b"old"), run_id)
        cut = datetime.now(UTC)
        time.sleep(0.01)
        _done(ledger, _slide(tmp_path, "new.png", b"new"), run_id)
        assert [r.name for r in ledger.slides(since=cut)] == ["new.png"]
        assert [r.name for r in ledger.slides(since=cut - timedelta(hours=1))] == [
            "new.png",
            "old.png",
        ]
        naive = cut.replace(tzinfo=None)  # naive means UTC
        assert [r.name for r in ledger.slides(since=naive)] == ["new.png"]
        assert ledger.slides(since=cut, status="failed") == []


def test_interrupted_slide_reported_and_processed_again(tmp_path: Path) -> None:
    slide = _slide(tmp_path, "a.png")
    db = tmp_path / "l.sqlite"
    child = _run_child(
        f"""
        import os
        from smearscan.ledger import Ledger
        ledger = Ledger.open(os.environ["LEDGER"])
        run_id = ledger.start_run({{"command": "process"}})
        identity = ledger.file_identity({str(slide)!r})
        ledger.mark_running(identity, {MODEL!r}, {CLASSIFIER!r}, {PARAMS!r}, run_id=run_id)
        os._exit(0)
        """,
        db,
    )
    assert child.wait(timeout=60) == 0
    with Ledger.open(db) as ledger:
        (row,) = ledger.interrupted_slides()
        assert (row.path, row.status) == (str(slide), "running")
        identity = ledger.file_identity(slide)
        assert not identity.hashed  # the killed run stored the sha256
        assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS) == (True, "interrupted")
        assert ledger.summary()["interrupted_slides"] == 1
        run_id = ledger.start_run({})  # marks the killed run interrupted
        assert ledger.summary()["runs"][1]["status"] == "interrupted"
        slide_id = ledger.mark_running(identity, MODEL, CLASSIFIER, PARAMS, run_id=run_id)
        assert slide_id == row.slide_id
        # Our own live run's slide is in progress, not interrupted.
        assert ledger.interrupted_slides() == []
        assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS) == (False, "in progress")
        ledger.mark_done(slide_id, zarr_path="/o.zarr/a")
        ledger.finish_run(run_id)
        assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS) == (False, "done")


def test_sigkill_during_writes_leaves_ledger_consistent(tmp_path: Path) -> None:
    db = tmp_path / "l.sqlite"
    started = tmp_path / "started"
    child = _run_child(
        f"""
        import os
        from pathlib import Path
        from smearscan.ledger import FileIdentity, Ledger
        ledger = Ledger.open(os.environ["LEDGER"])
        run_id = ledger.start_run({{"command": "process"}})
        for i in range(100000):
            identity = FileIdentity(f"/slides/{{i:06d}}.png", 1000 + i, i, f"{{i:064x}}")
            sid = ledger.mark_running(identity, "m", "c", "p", run_id=run_id)
            ledger.mark_done(sid, zarr_path=f"/o.zarr/{{i}}", preview_path=f"/p/{{i}}.png",
                             seconds=i / 10)
            if i == 20:
                Path({str(started)!r}).touch()
        """,
        db,
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert child.poll() is None, "the writer exited early"
        assert time.monotonic() < deadline, "the writer never started"
        time.sleep(0.02)
    time.sleep(0.3)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with Ledger.open(db) as ledger:
        rows = ledger.slides()
        ok = [r for r in rows if r.status == "ok"]
        assert len(ok) > 20
        for r in ok:
            i = int(Path(r.path).stem)
            assert (r.zarr_path, r.preview_path) == (f"/o.zarr/{i}", f"/p/{i}.png")
            assert r.seconds == pytest.approx(i / 10)
            assert r.finished_utc is not None
        # at most the slide in flight: queued (killed between queue and start) or running
        in_flight = [r for r in rows if r.status != "ok"]
        assert len(in_flight) <= 1
        assert all(
            r.status == "running" or (r.status == "skipped" and r.error == QUEUED)
            for r in in_flight
        )
        running = [r for r in in_flight if r.status == "running"]
        assert len(ledger.interrupted_slides()) == len(running)
        ledger.start_run({})
        assert ledger.summary()["runs"][1]["status"] == "interrupted"
    print(f"\nSIGKILL test: {len(ok)} complete rows, {len(rows) - len(ok)} in flight")


def test_unchanged_done_slides_checked_without_hashing(tmp_path: Path) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    slides = [_slide(folder, f"s{i:03d}.png", os.urandom(256 * 1024)) for i in range(100)]
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        run_id = ledger.start_run({})
        for slide in slides:
            _done(ledger, slide, run_id)
        ledger.finish_run(run_id)
    t0 = time.perf_counter()
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        identities = [ledger.file_identity(s) for s in slides]
        decisions = [ledger.should_process(i, MODEL, CLASSIFIER, PARAMS) for i in identities]
    seconds = time.perf_counter() - t0
    print(f"\nchecked 100 unchanged done slides in {seconds * 1000:.1f} ms (open included)")
    assert not any(i.hashed for i in identities)
    assert decisions == [(False, "done")] * 100
    assert isinstance(identities[0], FileIdentity)


def test_a_slide_whose_runs_keep_dying_is_not_tried_again(tmp_path: Path) -> None:
    slide = _slide(tmp_path, "poison.tif")
    db = tmp_path / "l.sqlite"
    for attempt in range(1, MAX_INTERRUPTIONS + 1):
        with Ledger.open(db) as ledger:  # each run dies while processing the slide
            identity = ledger.file_identity(slide)
            expected = (True, "new") if attempt == 1 else (True, "interrupted")
            assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS) == expected
            run_id = ledger.start_run({})
            ledger.mark_running(identity, MODEL, CLASSIFIER, PARAMS, run_id=run_id)
    with Ledger.open(db) as ledger:
        identity = ledger.file_identity(slide)
        assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS) == (
            False,
            INTERRUPTED_REASON,
        )
        assert ledger.should_process(identity, MODEL, CLASSIFIER, PARAMS, retry_failed=True) == (
            True,
            "interrupted",
        )
