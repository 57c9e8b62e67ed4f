"""A full disk in a nightly run: it fails the slides it hits, never the whole batch.

Real full disks: a small tmpfs (we run as root; skipped where mounting is not
allowed) holding the ledger, or the report and its masks, filled to the last
page. The batch goes on, the report is written where it can be, the log says
what happened, the exit code says slides failed, and once there is space
again the next run processes exactly the slides the full disk hit, without
``--retry-failed``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from smearscan.batch import process_batch
from smearscan.cli import app
from smearscan.config import ProcessConfig
from smearscan.results import SlideResult
from smearscan.synth import generate_field, write_field

runner = CliRunner()
CLI_OPTIONS = ["--model", "classical", "--classifier", "rules", "--pixel-size", "0.1"]


@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (skipped where that is not allowed)."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to its last page with one file; return it (delete it to free the space)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as fh:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def _config(ledger: Path) -> ProcessConfig:
    config = ProcessConfig(model="classical").with_overrides(
        classify={"classifier": "rules"},
        scale={"pixel_size_um": 0.1},
        batch={"ledger": str(ledger), "workers": 1},
    )
    return dataclasses.replace(
        config, output=dataclasses.replace(config.output, write_previews=False)
    )


def _slides(folder: Path, seeds: range) -> list[Path]:
    paths = []
    for seed in seeds:
        paths.append(folder / f"field{seed}.png")
        write_field(generate_field(seed, 400, 300), paths[-1])
    for extra in folder.glob("*_truth.*"):
        extra.unlink()
    return paths


def test_ledger_disk_filling_mid_run_fails_only_the_slides_it_hits(
    tmpfs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slides = tmp_path / "slides"
    _slides(slides, range(3))
    ledger = tmpfs / "ledger.sqlite"  # with its stored results beside it, on the small disk
    fillers: list[Path] = []

    def fill_after_the_first(result: SlideResult) -> None:
        if not fillers:
            fillers.append(_fill(tmpfs))

    report = tmp_path / "n1" / "r.xlsx"
    night = process_batch([slides], report, _config(ledger), on_result=fill_after_the_first)
    status = [r.status for r in night.results]
    assert sorted(status) == ["failed", "failed", "ok"]  # the batch went on, nothing raised
    hit = {r.slide: r for r in night.results if r.status == "failed"}
    for result in hit.values():
        assert result.error_stage == "ledger" and "No space left on device" in result.error
        assert not result.mask_path and result.wbc_count is None  # a failure, not half a slide
        assert not (tmp_path / "n1" / "r.zarr" / result.slide).exists()  # its masks removed
    errors = pd.read_excel(report, sheet_name="Errors")
    assert sorted(errors["slide"]) == sorted(hit)
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("cannot record" in m and "No space left" in m for m in logged), logged

    fillers[0].unlink()  # space again: the next night redoes just those two
    again = process_batch([slides], tmp_path / "n2" / "r.xlsx", _config(ledger))
    assert again.processed == 2
    assert [r.status for r in again.results] == ["ok", "ok", "ok"]


def test_full_ledger_disk_at_start_reports_the_done_slides(tmpfs: Path, tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    _slides(slides, range(1))
    ledger = tmpfs / "ledger.sqlite"
    args = ["process", str(slides), "--ledger", str(ledger), *CLI_OPTIONS, "--quiet"]
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "n1" / "r.xlsx")]).exit_code == 0
    _slides(slides, range(1, 3))
    filler = _fill(tmpfs)

    full = runner.invoke(app, [*args, "--out", str(tmp_path / "n2" / "r.xlsx")])
    assert full.exit_code == 1, (full.output, full.exception)
    summary = pd.read_excel(tmp_path / "n2" / "r.xlsx", sheet_name="Summary")
    assert dict(zip(summary["slide"], summary["status"], strict=True)) == {
        "field0.png": "ok",  # done before: from the ledger, read-only
        "field1.png": "failed",
        "field2.png": "failed",
    }
    errors = pd.read_excel(tmp_path / "n2" / "r.xlsx", sheet_name="Errors")
    assert set(errors["stage"]) == {"ledger"}
    assert all("disk is full" in m for m in errors["message"])
    assert "disk is full" in full.stderr

    filler.unlink()
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "n3" / "r.xlsx")])
    assert again.exit_code == 0, again.output


def test_report_on_a_full_disk_is_logged_and_exits_1(tmpfs: Path, tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    _slides(slides, range(1))
    out = tmpfs / "r.xlsx"  # the report, its masks and its log on the small disk
    args = ["process", str(slides), "--out", str(out), "--ledger", str(tmp_path / "l.sqlite")]
    args += [*CLI_OPTIONS, "--no-previews", "--log-format", "json"]
    assert runner.invoke(app, args).exit_code == 0
    _slides(slides, range(1, 2))
    filler = _fill(tmpfs)

    full = runner.invoke(app, args)
    assert full.exit_code == 1, (full.output, full.exception)
    assert full.exception is None or isinstance(full.exception, SystemExit)
    records = [json.loads(line) for line in full.stderr.splitlines() if line.startswith("{")]
    errors = [r["message"] for r in records if r["level"] == "ERROR"]
    assert any(
        f"report {out} not written" in m and "the disk is full: free space in" in m for m in errors
    ), errors
    assert any("field1.png" in m and "No space left on device" in m for m in errors), errors

    filler.unlink()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output  # field1 tried again unasked, report written
    summary = pd.read_excel(out, sheet_name="Summary")
    assert sorted(summary["slide"]) == ["field0.png", "field1.png"]
    assert (summary["status"] == "ok").all()
