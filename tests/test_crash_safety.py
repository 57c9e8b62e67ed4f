"""Crash safety of the outputs: a slide's Zarr group appears only once it is complete.

Unit tests of the staging and publishing of a slide's group
(:mod:`smearscan.zarr_store`, :mod:`smearscan.pipeline`), then the
acceptance test: a real ``smearscan process`` is killed with SIGKILL at
several points of a multi-slide batch and re-run with its ledger; after
every kill nothing half-written looks complete, and the final report and
Zarr outputs equal those of an uninterrupted run.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
import zarr
from PIL import Image

import smearscan.pipeline as pipeline
from smearscan.batch import SlideTask
from smearscan.config import ProcessConfig
from smearscan.results import OutputPaths
from smearscan.synth import generate_field, write_field
from smearscan.zarr_store import (
    create_slide_store,
    discard_staged_store,
    publish_slide_store,
    staging_dir,
)

PIXEL_SIZE_UM = 0.1
N_SLIDES = 4
SIDE_PX = 600
RUN_TIMEOUT_S = 240  # one run takes seconds; this only keeps a broken run from hanging
ARRAYS = ("labels/cells/s0", "labels/classes/s0", "labels/nuclei/s0")


def _config() -> ProcessConfig:
    return ProcessConfig(model="classical").with_overrides(
        classify={"classifier": "rules"}, scale={"pixel_size_um": PIXEL_SIZE_UM}
    )


def _field(path: Path, seed: int, side: int = 300) -> Path:
    write_field(generate_field(seed, side, side, pixel_size_um=PIXEL_SIZE_UM), path)
    for extra in path.parent.glob(f"{path.stem}_truth.*"):
        extra.unlink()
    return path


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _groups(zarr_dir: Path) -> list[str]:
    return sorted(p.name for p in zarr_dir.iterdir() if p.is_dir()) if zarr_dir.is_dir() else []


# ----------------------------------------------------------------------------- unit tests


def test_staging_dir_is_a_hidden_sibling_outside_the_store(tmp_path: Path) -> None:
    zarr_dir = tmp_path / "out" / "report.zarr"
    staging = staging_dir(zarr_dir)
    assert staging == (tmp_path / "out" / ".report.zarr.partial").resolve()
    assert not staging.is_relative_to(zarr_dir.resolve())
    assert staging_dir(tmp_path / "out" / "x" / ".." / "report.zarr") == staging  # path only


def test_group_is_published_only_when_complete(tmp_path: Path) -> None:
    zarr_dir = tmp_path / "r.zarr"
    old = create_slide_store(zarr_dir, "s", height=8, width=8, pixel_size_um=0.25)
    old.classes[:] = 1
    publish_slide_store(old)
    assert _groups(zarr_dir) == ["s"] and _entries(staging_dir(zarr_dir)) == []

    new = create_slide_store(zarr_dir, "s", height=8, width=8, pixel_size_um=0.25)
    assert new.path == zarr_dir / "s" and new.staged_path is not None
    assert new.staged_path.parent == staging_dir(zarr_dir)
    new.classes[:] = 2
    # until published, the old group stays as it was and the new one is not in the store
    assert zarr.open_group(zarr_dir / "s", mode="r")["labels/classes/s0"][0, 0] == 1
    assert list(zarr.open_group(zarr_dir, mode="r").group_keys()) == ["s"]
    assert publish_slide_store(new) == zarr_dir / "s"
    assert zarr.open_group(zarr_dir / "s", mode="r")["labels/classes/s0"][0, 0] == 2
    assert _entries(staging_dir(zarr_dir)) == []  # the old group moved aside is deleted

    failed = create_slide_store(zarr_dir, "t", height=8, width=8, pixel_size_um=0.25)
    discard_staged_store(failed)
    assert _groups(zarr_dir) == ["s"] and _entries(staging_dir(zarr_dir)) == []


def test_failing_slide_leaves_neither_a_staged_nor_a_final_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _field(tmp_path / "f.png", 1)
    zarr_dir, task = tmp_path / "r.zarr", SlideTask(path, "f.png", "f.png")
    ok = pipeline.run_slide_safely(task, _config(), zarr_dir)
    assert ok.status == "ok" and Path(ok.mask_path) == zarr_dir / "f.png"
    assert _groups(zarr_dir) == ["f.png"]

    def broken(*args: object, **kwargs: object) -> None:
        assert _entries(staging_dir(zarr_dir)), "the group is built in the staging directory"
        raise RuntimeError("cell stage exploded")

    monkeypatch.setattr(pipeline, "run_cell_stage", broken)
    failed = pipeline.run_slide_safely(task, _config(), zarr_dir)
    assert failed.status == "failed" and failed.error_stage == "cells", failed.error
    assert failed.mask_path == ""
    assert _groups(zarr_dir) == []  # the old masks would disagree with the report: removed too
    assert _entries(staging_dir(zarr_dir)) == []


def test_reprocessed_slide_replaces_its_group(tmp_path: Path) -> None:
    zarr_dir, path = tmp_path / "r.zarr", tmp_path / "f.png"
    task = SlideTask(path, "f.png", "f.png")
    _field(path, 1)
    first = pipeline.run_slide_safely(task, _config(), zarr_dir)
    _field(path, 2)  # same name, other content
    second = pipeline.run_slide_safely(task, _config(), zarr_dir)
    assert first.status == second.status == "ok" and second.mask_path == first.mask_path
    fresh = pipeline.run_slide_safely(task, _config(), tmp_path / "fresh.zarr")
    group = zarr.open_group(second.mask_path, mode="r")
    reference = zarr.open_group(fresh.mask_path, mode="r")
    for name in ARRAYS:
        np.testing.assert_array_equal(group[name][:], reference[name][:])
    assert second.wbc_count == fresh.wbc_count
    assert _groups(zarr_dir) == ["f.png"] and _entries(staging_dir(zarr_dir)) == []


def test_batch_start_clears_staging_leftovers(tmp_path: Path) -> None:
    outputs = OutputPaths.for_report(tmp_path / "r.xlsx")
    leftover = staging_dir(outputs.zarr) / "f.png-123-abc"
    (leftover / "labels").mkdir(parents=True)
    pipeline.prepare_outputs(outputs)
    assert not staging_dir(outputs.zarr).exists() and outputs.zarr.is_dir()


# ----------------------------------------------------------------------------- SIGKILL and re-run


def _start(inputs: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "smearscan", "process", str(inputs),
        "--out", str(out / "report.xlsx"), "--ledger", str(out / "ledger.sqlite"),
        "--model", "classical", "--classifier", "rules", "--pixel-size", str(PIXEL_SIZE_UM),
        "--workers", "1", *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    try:
        _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"smearscan process did not finish in {RUN_TIMEOUT_S} s")
    assert proc.returncode == 0, stderr.decode(errors="replace")[-3000:]


def _done(out: Path) -> set[str]:
    """Names of the slides the ledger records done (read-only; empty before it exists)."""
    ledger = out / "ledger.sqlite"
    if not ledger.is_file():
        return set()
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute("SELECT name FROM slides WHERE status = 'ok'").fetchall()
    except sqlite3.OperationalError:  # created but no schema yet
        return set()
    return {name for (name,) in rows}


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled); fail if it never does."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"no {what} within {RUN_TIMEOUT_S} s")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"killed {what}: exit {proc.returncode}"


def _arrays(group: Path) -> dict[str, np.ndarray]:
    opened = zarr.open_group(group, mode="r")
    return {name: opened[name][:] for name in ARRAYS}


def _check_after_kill(out: Path, reference: dict[str, dict[str, np.ndarray]]) -> set[str]:
    """Nothing half-written under a final name; returns the slides the ledger has done."""
    done = _done(out)
    zarr_dir = out / "report.zarr"
    for key in _groups(zarr_dir):
        # a published group is complete: readable and equal to the uninterrupted run's
        # (done in the ledger, or killed between publishing it and recording it done)
        try:
            arrays = _arrays(zarr_dir / key)
        except (KeyError, FileNotFoundError, ValueError) as exc:
            pytest.fail(f"{zarr_dir / key} is under its final name but incomplete: {exc!r}")
        assert key in reference, key
        for name, array in arrays.items():
            assert np.array_equal(array, reference[key][name]), f"{key}/{name} differs"
    assert done <= set(_groups(zarr_dir)), "a slide recorded done has no group"
    for png in (out / "report_previews").rglob("*.png"):
        if not png.name.startswith("."):  # atomic_write's hidden temporary files
            with Image.open(png) as image:
                image.load()
    report = out / "report.xlsx"
    if report.exists():
        openpyxl.load_workbook(report).close()
    return done


def _report(out: Path) -> dict[str, pd.DataFrame]:
    sheets = pd.read_excel(out / "report.xlsx", sheet_name=["Summary", "Cells", "Differential"])
    sheets["Summary"] = sheets["Summary"].drop(columns=["seconds"])
    return {name: df.sort_values(list(df.columns)[:2]).reset_index(drop=True)
            for name, df in sheets.items()}  # fmt: skip


def test_sigkill_and_rerun_match_an_uninterrupted_run(tmp_path: Path) -> None:
    inputs = tmp_path / "slides"
    inputs.mkdir()
    for seed in range(N_SLIDES):
        _field(inputs / f"field{seed}.png", seed, SIDE_PX)
    names = {f"field{seed}.png" for seed in range(N_SLIDES)}
    clean, killed = tmp_path / "clean", tmp_path / "killed"

    _finish(_start(inputs, clean))
    reference = {
        key: _arrays(clean / "report.zarr" / key) for key in _groups(clean / "report.zarr")
    }
    assert set(reference) == names

    staging = staging_dir(killed / "report.zarr")
    final = killed / "report.zarr"
    # (a) while the first slide's group is being written
    _kill_when(
        _start(inputs, killed),
        lambda: bool(_entries(staging)) or bool(_groups(final)),
        "a slide group being written",
    )
    _check_after_kill(killed, reference)
    # (b) after one slide is done (the next one is in progress)
    _kill_when(_start(inputs, killed), lambda: len(_done(killed)) >= 1, "a slide done")
    _check_after_kill(killed, reference)
    # (c) late: all but one slide done
    _kill_when(
        _start(inputs, killed), lambda: len(_done(killed)) >= N_SLIDES - 1, "all but one done"
    )
    assert len(_check_after_kill(killed, reference)) >= N_SLIDES - 1
    # A plain re-run: only the slides a killed run had started count as attempts, so
    # none of them reaches MAX_INTERRUPTIONS and nothing is held back.
    _finish(_start(inputs, killed))

    assert _check_after_kill(killed, reference) == names
    assert _groups(final) == sorted(names)
    assert _entries(staging) == []  # the leftovers of the killed runs are gone
    got, want = _report(killed), _report(clean)
    assert sorted(got["Summary"]["slide"]) == sorted(names)  # each slide exactly once
    assert (got["Summary"]["status"] == "ok").all()
    for name in ("Summary", "Cells", "Differential"):
        pd.testing.assert_frame_equal(got[name], want[name], check_like=True, obj=name)
    per_slide = got["Cells"].groupby("slide").size()
    assert per_slide.equals(want["Cells"].groupby("slide").size())
    assert per_slide.sum() == got["Summary"]["wbc_count"].sum()
