"""What a nightly operator sees of one real ``smearscan process`` run (a subprocess, as cron
runs it): file modes from the umask, slides started in sorted order, each failure logged
once, one blast column each in the Differential with the Summary's and the review page's
number, ISO time stamps on the console, stopped slides logged as skipped, and leftovers of
killed runs removed by the next run even when it has nothing to process."""

from __future__ import annotations

import html
import io
import logging
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from rich.console import Console
from rich.logging import RichHandler

from smearscan.console import BatchProgress, setup_logging
from smearscan.executor import run_tasks
from smearscan.results import SlideResult
from smearscan.synth import generate_field, write_field

#: Slide names whose sorted order is neither creation nor Dask's key order.
NAMES = ["f1.png", "f10.png", "f2.png", "f3.png"]


def _fields(folder: Path, names: list[str]) -> Path:
    """Synthetic fields of 800x600 px, 4 normal WBCs and 2 blasts each, named ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        write_field(generate_field(seed, 800, 600, n_wbc=4, blasts=2), folder / "field.png")
        (folder / "field.png").rename(folder / name)
    for extra in folder.glob("*_truth.*"):
        extra.unlink()
    return folder


def _process(
    inputs: Path, report: Path, *extra: str, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "smearscan", "process", str(inputs), "--out", str(report),
        "--model", "classical", "--classifier", "rules", "--pixel-size", "0.1",
        "--workers", "1", *extra,
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, umask=umask, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One run over four fields and one broken file, under umask 022: ``(report, process)``."""
    root = tmp_path_factory.mktemp("operator")
    slides = _fields(root / "slides", NAMES)
    (slides / "broken.png").write_bytes(b"not an image")
    report = root / "out" / "r.xlsx"
    proc = _process(slides, report)
    assert proc.returncode == 1, proc.stderr  # the broken file failed
    return report, proc


def test_outputs_are_created_with_the_umask(run: tuple[Path, subprocess.CompletedProcess[str]]):
    report, _ = run
    files, folders = {}, {}
    for dirpath, dirnames, filenames in os.walk(report.parent):
        for name in filenames:
            files[os.path.join(dirpath, name)] = stat.S_IMODE(
                os.lstat(os.path.join(dirpath, name)).st_mode
            )
        for name in dirnames:
            folders[os.path.join(dirpath, name)] = stat.S_IMODE(
                os.lstat(os.path.join(dirpath, name)).st_mode
            )
    names = {os.path.relpath(p, report.parent) for p in files}
    assert {"r.xlsx", "r_cells.parquet", "r_previews/index.html", "r_previews/f1.png.png"} <= names
    assert any(n.startswith("r_ledger_results/") for n in names)  # the stored results
    assert {p: m for p, m in files.items() if m != 0o644} == {}
    assert {p: m for p, m in folders.items() if m != 0o755} == {}


def test_slides_start_in_sorted_order(run: tuple[Path, subprocess.CompletedProcess[str]]):
    report, _ = run
    log = report.with_suffix(".log").read_text(encoding="utf-8")
    done = re.findall(r"\[\d+/5\] (\S+) ", log)  # --workers 1: they end in the order they start
    assert done == sorted(["broken.png", *NAMES])
    summary = openpyxl.load_workbook(report, read_only=True)["Summary"]
    assert [row[0] for row in summary.iter_rows(min_row=2, values_only=True)] == done


def test_a_failure_is_logged_once(run: tuple[Path, subprocess.CompletedProcess[str]]):
    report, proc = run
    for text in (report.with_suffix(".log").read_text(encoding="utf-8"), proc.stderr):
        lines = [
            line
            for line in text.splitlines()
            if "not an image" in line and re.search(r" (ERROR|WARNING) ", line)
        ]
        assert len(lines) == 1, lines
        assert "ERROR" in lines[0] and "[1/5] broken.png FAILED (read:" in lines[0]


def _sheet(report: Path, name: str) -> tuple[list[str], list[dict[str, object]]]:
    rows = list(openpyxl.load_workbook(report, read_only=True)[name].iter_rows(values_only=True))
    header = [str(h) for h in rows[0]]
    return header, [dict(zip(header, row, strict=True)) for row in rows[1:]]


def test_blast_percent_one_column_one_number(run: tuple[Path, subprocess.CompletedProcess[str]]):
    report, _ = run
    header, differential = _sheet(report, "Differential")
    assert header.count("blast_count") == 1 and header.count("blast_percent") == 1
    assert len(header) == len(set(header))
    _, summary = _sheet(report, "Summary")
    page = (report.parent / "r_previews" / "index.html").read_text(encoding="utf-8")
    shown = {}
    for article in page.split("<article")[1:]:
        found = re.search(r"<h2>([^<]+)<span.*<th>blast %</th><td>([^<]+)</td>", article, re.S)
        if found:
            shown[html.unescape(found[1])] = found[2]
    by_group = {row["group"]: row for row in differential}
    checked = 0
    for row in summary:
        if row["status"] != "ok":
            continue
        group = by_group[row["slide"]]  # ungrouped: each field its own group
        assert group["blast_count"] == row["blast_count"]
        assert group["blast_percent"] == row["blast_percent"]
        raw = 100 * row["blast_count"] / row["wbc_count"]
        expected = round(raw, 1)
        assert row["blast_percent"] == pytest.approx(expected, abs=1e-9)
        assert float(shown[row["slide"]]) == pytest.approx(expected, abs=1e-9)
        checked += round(raw, 2) != expected  # e.g. 33.33 and 33.3: the rounding shows
    assert checked, "no field whose blast % needs rounding: the rounding was not checked"


def test_console_time_stamps_are_iso(tmp_path: Path):
    setup_logging(None, quiet=False, verbose=False, rich=True)
    logger = logging.getLogger("smearscan")
    (handler,) = [h for h in logger.handlers if isinstance(h, RichHandler)]
    out = io.StringIO()
    handler.console = Console(file=out, width=200, force_terminal=False)
    try:
        logging.getLogger("smearscan.test").info("hello")
    finally:
        logger.removeHandler(handler)
    assert re.match(r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\] +INFO +hello", out.getvalue()), (
        out.getvalue()
    )


def test_stopped_slides_are_logged_as_skipped(caplog: pytest.LogCaptureFixture):
    progress = BatchProgress(Console(file=io.StringIO()), rich=False)
    progress.start(2)
    stopped = SlideResult(
        slide="f2.png", path="/in/f2.png", status="skipped",
        error="not run: the batch was stopped by SIGTERM",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="smearscan.progress"):
        logging.getLogger("smearscan.progress").propagate = True
        progress.slide_done(stopped)
    (record,) = [r for r in caplog.records if r.name == "smearscan.progress" and "f2" in r.message]
    assert record.getMessage() == (
        "[1/2] f2.png skipped (not run: the batch was stopped by SIGTERM) (0.0 s)"
    )
    assert record.levelno == logging.INFO and record.status == "skipped"  # type: ignore[attr-defined]
    assert "FAILED" not in record.getMessage()


def test_local_executor_starts_tasks_in_order():
    started: list[int] = []
    finished: list[int] = []

    def fn(i: int) -> int:
        started.append(i)
        return 10 * i

    results = run_tasks(fn, list(range(12)), workers=1, on_result=finished.append)
    assert started == list(range(12))
    assert results == [10 * i for i in range(12)] == finished


def test_leftovers_of_a_killed_run_go_when_the_next_has_nothing_to_do(tmp_path: Path):
    slides = _fields(tmp_path / "slides", ["f1.png"])
    out = tmp_path / "out"
    report = out / "r.xlsx"
    assert _process(slides, report).returncode == 0
    leftovers = [
        ".r-k1ll3d_0.xlsx",
        ".r_cells-k1ll3d_0.parquet",
        "r_previews/.index-k1ll3d_0.html",
        "r_previews/.f1.png-k1ll3d_0.png",
        "r_previews/thumbnails/.f1.png-k1ll3d_0.png",
        "r_ledger_results/.1-k1ll3d_0.json",
        ".r.zarr.partial/f1.png-123-abcdef012345/zarr.json",
    ]
    others = [".other-k1ll3d_0.xlsx", ".r-short.xlsx", "notes.txt", "r_previews/.keep"]
    for name in leftovers + others:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"")
    again = _process(slides, report)
    assert again.returncode == 0, again.stderr
    assert "1 already done" in report.with_suffix(".log").read_text(encoding="utf-8")
    assert [n for n in leftovers if (out / n).exists()] == []
    assert not (out / ".r.zarr.partial").exists()
    assert [n for n in others if not (out / n).exists()] == []


LONG_NAME = "a" * 251 + ".png"  # 255 bytes: NAME_MAX


def test_a_255_byte_file_name_processes_end_to_end(tmp_path: Path):
    """Report, Parquet, previews, masks and stored result all written, no temporary file left
    (atomic writes keep their temporary names within 255 bytes, slide keys are capped)."""
    name = LONG_NAME
    slides = _fields(tmp_path / "slides", [name])
    report = tmp_path / "out" / "r.xlsx"
    proc = _process(slides, report)
    assert proc.returncode == 0, proc.stderr
    _, summary = _sheet(report, "Summary")
    assert [(row["slide"], row["status"]) for row in summary] == [(name, "ok")]
    left = [p for p in report.parent.rglob(".*") if p.is_file() and p.name != ".r.zarr.lock"]
    assert not left  # no temporary file left (the store's lock file stays, like r.lock)
