"""Nothing lost, nothing unreported: what a nightly re-run says about slides that are not ok.

Real runs (classical segmenter, rules classifier, small synthetic fields)
against one ledger: a slide that failed before, or whose runs were killed 3
times, is in the re-run's Errors sheet with its reason and the run exits 1; a
failure of a passing kind (the file vanished mid-run) is not held until
``--retry-failed``; a folder that cannot be listed is an Errors row; and a
``--since`` report processes again a ledger slide whose masks were deleted.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import smearscan
from smearscan.batch import SlideTask, process_batch
from smearscan.batch_ledger import BatchLedger
from smearscan.cli import app
from smearscan.config import ProcessConfig
from smearscan.synth import generate_field, write_field

runner = CliRunner()
CLI_OPTIONS = ["--model", "classical", "--classifier", "rules", "--pixel-size", "0.1", "--quiet"]


def _config(ledger: Path, **batch: object) -> ProcessConfig:
    config = ProcessConfig(model="classical").with_overrides(
        classify={"classifier": "rules"},
        scale={"pixel_size_um": 0.1},
        batch={"ledger": str(ledger), "workers": 1, **batch},
    )
    return dataclasses.replace(
        config, output=dataclasses.replace(config.output, write_previews=False)
    )


def _field(path: Path, seed: int) -> Path:
    write_field(generate_field(seed, 400, 300), path)
    for extra in path.parent.glob("*_truth.*"):
        extra.unlink()
    return path


def _errors(report: Path) -> dict[str, tuple[str, str]]:
    sheet = pd.read_excel(report, sheet_name="Errors", keep_default_na=False)
    return {r.slide: (r.stage, r.message) for r in sheet.itertuples()}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    slides = tmp_path / "slides"
    _field(slides / "good.png", 1)
    (slides / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return slides


def test_rerun_after_a_failure_reports_it_and_exits_1(folder: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    args = ["process", str(folder), "--ledger", str(ledger), *CLI_OPTIONS]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "n1" / "r.xlsx")])
    assert first.exit_code == 1, first.output
    stage, reason = _errors(tmp_path / "n1" / "r.xlsx")["broken.png"]

    again = runner.invoke(app, [*args, "--out", str(tmp_path / "n2" / "r.xlsx")])
    assert again.exit_code == 1, again.output  # not 0: a slide is not ok
    errors = _errors(tmp_path / "n2" / "r.xlsx")
    assert list(errors) == ["broken.png"]
    assert errors["broken.png"][0] == stage
    assert reason in errors["broken.png"][1] and "--retry-failed" in errors["broken.png"][1]
    assert "broken.png" in again.stderr  # the log names it too


def test_a_slide_killed_three_times_is_an_errors_row(tmp_path: Path) -> None:
    slide = _field(tmp_path / "slides" / "hang.png", 2)
    ledger = tmp_path / "ledger.sqlite"
    config = _config(ledger)
    task = SlideTask(slide, "hang.png", "hang.png")
    for _ in range(3):  # three runs killed while processing it (left "running")
        killed = BatchLedger(ledger, config, force=False, retry_failed=False)
        todo, _ = killed.plan([task])
        assert todo == [task]
        killed.started(task)
        killed.ledger.close()  # as the kernel would: no end recorded

    report = tmp_path / "out" / "r.xlsx"
    batch = process_batch([slide.parent], report, config)
    assert batch.processed == 0 and batch.results[0].status == "skipped"
    stage, message = _errors(report)["hang.png"]
    assert stage == "interrupted" and "killed 3 times" in message


def test_a_slide_that_vanished_mid_run_is_tried_again_unasked(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    paths = [_field(slides / f"f{i}.png", i) for i in (1, 2)]
    saved = {p.name: p.read_bytes() for p in paths}
    ledger = tmp_path / "ledger.sqlite"
    gone: list[str] = []

    def remove_the_other(result: smearscan.results.SlideResult) -> None:
        if not gone:  # after the first slide, the second one's file vanishes
            gone.append(next(p.name for p in paths if p.name != result.slide))
            (slides / gone[0]).unlink()

    night = process_batch(
        [slides], tmp_path / "n1" / "r.xlsx", _config(ledger), on_result=remove_the_other
    )
    failed = {r.slide: r for r in night.results if r.status != "ok"}
    assert list(failed) == gone and "file not found" in failed[gone[0]].error
    assert list(_errors(tmp_path / "n1" / "r.xlsx")) == gone

    (slides / gone[0]).write_bytes(saved[gone[0]])  # back, same content
    again = process_batch([slides], tmp_path / "n2" / "r.xlsx", _config(ledger))
    assert again.processed == 1  # no --retry-failed needed
    assert [r.status for r in again.results] == ["ok", "ok"]


def test_transient_or_permanent() -> None:
    from smearscan.failure_kinds import is_transient

    assert is_transient("write", "OSError: [Errno 28] No space left on device")
    assert is_transient("read", "/x/a.png: file not found (No such file or directory)")
    assert is_transient("segment", "OSError: [Errno 5] Input/output error")
    assert not is_transient("read", "/x/a.png: truncated or damaged PNG")
    assert not is_transient("timeout", "took longer than --slide-timeout 600 s")
    assert not is_transient("memory", "needs 9000 MB, over --max-memory: [Errno 28]")


def test_a_folder_that_cannot_be_listed_is_an_errors_row(folder: Path, tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to drop root's right to list any folder")
    locked = folder / "locked"
    _field(locked / "hidden.png", 3)
    locked.chmod(0)
    try:
        probe = subprocess.run(
            ["unshare", "--user", sys.executable, "-c", f"import os; os.listdir({str(locked)!r})"],
            capture_output=True,
        )
        if probe.returncode == 0 or b"PermissionError" not in probe.stderr:
            pytest.skip(f"cannot make a folder unlistable here: {probe.stderr[-300:]!r}")
        out = tmp_path / "out" / "r.xlsx"
        env = dict(os.environ, PYTHONPATH=str(Path(smearscan.__file__).parents[1]))
        command = ["unshare", "--user", sys.executable, "-m", "smearscan", "process", str(folder)]
        command += ["--out", str(out), "--no-ledger", *CLI_OPTIONS]
        run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    finally:
        locked.chmod(0o755)
    assert run.returncode == 1, run.stderr[-3000:]
    errors = _errors(out)
    assert errors["locked"][0] == "list"
    assert (
        "cannot list the folder" in errors["locked"][1]
        and "Permission denied" in errors["locked"][1]
    )
    assert "locked" in run.stderr


def test_since_runs_again_a_ledger_slide_whose_masks_were_deleted(tmp_path: Path) -> None:
    night = tmp_path / "night"
    _field(night / "a.png", 4)
    _field(night / "b.png", 5)
    ledger = tmp_path / "ledger.sqlite"
    first = process_batch([night], tmp_path / "n1" / "r.xlsx", _config(ledger))
    shutil.rmtree(next(r.mask_path for r in first.results if r.slide == "a.png"))

    other = _field(tmp_path / "other" / "c.png", 6)  # a report over the whole ledger
    report = process_batch([other], tmp_path / "n2" / "r.xlsx", _config(ledger, since="all"))
    assert [r.slide for r in report.results] == ["c.png", "a.png", "b.png"]
    assert [r.status for r in report.results] == ["ok", "ok", "ok"]
    assert report.processed == 2  # c.png and a.png again
    again = next(r for r in report.results if r.slide == "a.png")
    assert Path(again.mask_path).is_dir() and again.mask_path.startswith(str(tmp_path / "n2"))
    summary = pd.read_excel(tmp_path / "n2" / "r.xlsx", sheet_name="Summary")
    assert sorted(summary["slide"]) == ["a.png", "b.png", "c.png"]


def test_since_reports_every_ledger_slide_that_is_not_ok(tmp_path: Path) -> None:
    from smearscan.ledger import Ledger

    files = {name: tmp_path / name for name in ("held.png", "full.png", "stopped.png", "hung.png")}
    for path in files.values():
        path.write_bytes(path.name.encode())
    ledger = tmp_path / "ledger.sqlite"
    with Ledger.open(ledger) as book:
        run = book.start_run({"command": "process"})
        ids = {
            name: book.mark_running(book.file_identity(path), "m", "c", "p", run_id=run)
            for name, path in files.items()
        }
        book.mark_failed(ids["held.png"], "read", "truncated PNG")
        book.mark_retry(ids["full.png"], "write", "OSError: [Errno 28] No space left on device")
        book.mark_skipped(ids["stopped.png"], "not run: the batch was stopped by SIGTERM")
        # hung.png stays "running": closing with the run unfinished = the run was killed

    weekly = BatchLedger(ledger, _config(ledger), force=False, retry_failed=False)
    try:
        found, redo = weekly.earlier_results(None, set())
    finally:
        weekly.close()
    assert redo == []
    got = {r.slide: (r.status, r.error_stage) for r in found}
    assert got == {
        "full.png": ("failed", "write"),
        "held.png": ("failed", "read"),
        "hung.png": ("skipped", "interrupted"),
        "stopped.png": ("skipped", "not run"),
    }
    by_name = {r.slide: r.error for r in found}
    assert "No space left" in by_name["full.png"] and "tries it again" in by_name["full.png"]
    assert "killed" in by_name["hung.png"] and "SIGTERM" in by_name["stopped.png"]
