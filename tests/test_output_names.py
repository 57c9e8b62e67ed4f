"""Output names that never collide (issue #13, items 1, 2, 11 and 17): every name beside a
report comes from the report's whole name, slide keys are unique and stable across runs
and short enough for every name built from them, and each output and each ledger is
locked by a lock file of its own, taken before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from smearscan.batch import process_batch
from smearscan.config import ProcessConfig
from smearscan.results import OutputPaths
from smearscan.runlock import LockedError, RunLock, ledger_lock_path, lock_run, run_locks
from smearscan.slide_keys import MAX_KEY_BYTES, slide_key, unique_keys
from smearscan.synth import generate_field, write_field

EXIT_LOCKED = 3


def _config(**batch: object) -> ProcessConfig:
    return ProcessConfig(model="classical").with_overrides(
        classify={"classifier": "rules"}, scale={"pixel_size_um": 0.1}, batch=batch
    )


def _field(path: Path, seed: int = 3) -> Path:
    return write_field(generate_field(seed, 400, 320), path)[0]


def _process(field: Path, report: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        sys.executable, "-m", "smearscan", "process", str(field), "--out", str(report),
        "--model", "classical", "--classifier", "rules", "--pixel-size", "0.1",
        "--no-previews", "--quiet", *extra,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=180)


def _group_source(mask_path: str) -> str:
    """The source file a slide's Zarr group records (``attrs["smearscan"]["source"]``)."""
    meta = json.loads((Path(mask_path) / "zarr.json").read_text(encoding="utf-8"))
    return str(meta["attributes"]["smearscan"]["source"])


# ------------------------------------------------------------------ item 1: dotted reports


def test_every_output_name_comes_from_the_whole_report_name(tmp_path: Path) -> None:
    dec4 = OutputPaths.for_report(tmp_path / "rep" / "night.2026-12-04.xlsx")
    dec5 = OutputPaths.for_report(tmp_path / "rep" / "night.2026-12-05.xlsx")
    assert dec4.zarr.name == "night.2026-12-04.zarr" and dec4.log.name == "night.2026-12-04.log"
    assert dec4.lock.name == "night.2026-12-04.lock"
    mine = {dec4.zarr, dec4.log, dec4.lock, dec4.previews, dec4.cells, dec4.ledger}
    theirs = {dec5.zarr, dec5.log, dec5.lock, dec5.previews, dec5.cells, dec5.ledger}
    assert not mine & theirs
    plain = OutputPaths.for_report(Path("out/r.xlsx"))  # the documented names stay
    assert (plain.zarr, plain.log, plain.lock) == (
        Path("out/r.zarr"), Path("out/r.log"), Path("out/r.lock")
    )  # fmt: skip


def test_two_dotted_reports_keep_their_own_masks(tmp_path: Path) -> None:
    """Each report's mask_path points at its own store, not at the other night's."""
    field = _field(tmp_path / "in" / "f.png")
    folder = tmp_path / "rep"
    first = process_batch([field], folder / "night.2026-12-04.xlsx", _config())
    second = process_batch([field], folder / "night.2026-12-05.xlsx", _config())
    for batch, night in ((first, "night.2026-12-04"), (second, "night.2026-12-05")):
        (result,) = batch.results
        assert result.status == "ok", result.error
        assert Path(result.mask_path).parent == (folder / f"{night}.zarr").resolve()
    assert not (folder / "night.zarr").exists()
    assert Path(first.results[0].mask_path).is_dir()  # the 05 run left the 04 masks alone


# ------------------------------------------------------------------ item 2: slide keys


@pytest.mark.parametrize(
    ("one", "other"),
    [("样本1.jpg", "标本1.jpg"), ("a b.jpg", "a_b.jpg"), ("a/b.jpg", "a__b.jpg"),
     ("a_/b.jpg", "a/_b.jpg"), ("x.jpg", "../x.jpg")],
)  # fmt: skip
def test_distinct_paths_get_distinct_keys_whatever_else_is_in_the_batch(one, other) -> None:
    assert slide_key(one) != slide_key(other)
    assert unique_keys([one, other]) == [slide_key(one), slide_key(other)]
    assert unique_keys([other, one]) == [slide_key(other), slide_key(one)]  # order-free


def test_plain_names_keep_their_documented_keys() -> None:
    assert slide_key("f.png") == "f.png"
    assert slide_key("run1/Im001_1.jpg") == "run1__Im001_1.jpg"


def test_one_relative_path_from_two_folders_is_named_by_its_absolute_path() -> None:
    keys = unique_keys(["f.jpg", "f.jpg"], ["/night1/f.jpg", "/night2/f.jpg"])
    assert keys[0] == "f.jpg" and keys[1].startswith("f.jpg-") and keys[1] != keys[0]
    again = unique_keys(["f.jpg", "f.jpg"], ["/night1/f.jpg", "/night2/f.jpg"])
    assert again == keys


@pytest.mark.parametrize(
    "name", ["a" * 251 + ".png", "样" * 80 + ".png", "é" * 120 + ".jpg", "d/" * 60 + "x.png"]
)
def test_keys_are_short_enough_for_every_name_built_from_them(name: str) -> None:
    key = slide_key(name)
    assert len(key.encode()) <= MAX_KEY_BYTES <= 200
    longest = [f"{key}.png", f".{key}-k1ll3d_0.png", f"{key}-4194304-abcdef012345"]
    assert all(len(n.encode()) <= 255 for n in longest)
    assert slide_key(name[:-5] + "b.png") != key  # cut keys still differ


def test_a_new_slide_that_sanitises_alike_never_takes_an_earlier_slides_masks(
    tmp_path: Path,
) -> None:
    """样本1 runs; 标本1 (sorting first, same sanitised name) is added and the output run
    again: each Summary row points at its own masks, and 样本1's are untouched."""
    folder = tmp_path / "in"
    _field(folder / "样本1.jpg", seed=3)
    report = tmp_path / "out" / "r.xlsx"
    first = process_batch([folder], report, _config())
    (earlier,) = first.results
    assert earlier.status == "ok", earlier.error
    _field(folder / "标本1.jpg", seed=4)
    again = process_batch([folder], report, _config())
    summary = pd.read_excel(report, sheet_name="Summary").set_index("slide")
    assert sorted(summary.index) == sorted(["样本1.jpg", "标本1.jpg"])
    for column in ("mask_path", "preview_path"):
        assert summary.loc["样本1.jpg", column] != summary.loc["标本1.jpg", column]
        assert all((report.parent / p).exists() for p in summary[column])  # relative paths
    for name in ("样本1.jpg", "标本1.jpg"):
        assert _group_source(str(report.parent / summary.loc[name, "mask_path"])) == name
    assert {r.slide: r.mask_path for r in again.results}["样本1.jpg"] == earlier.mask_path


# ------------------------------------------------------------------ items 11 and 17: locks


def test_a_report_and_a_ledger_of_one_stem_run(tmp_path: Path) -> None:
    """``--out night.xlsx --ledger night.sqlite`` used to lock itself out (both night.lock)."""
    field = _field(tmp_path / "in" / "f.png")
    report = tmp_path / "rep" / "night.xlsx"
    done = _process(field, report, "--ledger", str(tmp_path / "rep" / "night.sqlite"))
    assert done.returncode == 0, done.stderr
    assert report.is_file() and (tmp_path / "rep" / "night.sqlite").is_file()
    assert (tmp_path / "rep" / "night.lock").is_file()
    assert (tmp_path / "rep" / "night.sqlite.lock").is_file()


def test_a_default_ledger_and_the_same_file_as_ledger_exclude_each_other(
    tmp_path: Path,
) -> None:
    """Run A (default ledger ``A_ledger.sqlite``) and run B (``--ledger`` that file)."""
    field = _field(tmp_path / "in" / "f.png")
    a_report = tmp_path / "a" / "A.xlsx"
    a_ledger = OutputPaths.for_report(a_report).ledger
    a_run = lock_run(a_report, _config())  # run A holds its locks
    try:
        b_run = _process(field, tmp_path / "b" / "B.xlsx", "--ledger", str(a_ledger))
    finally:
        a_run.release()
    assert b_run.returncode == EXIT_LOCKED, b_run.stderr
    assert f"pid {os.getpid()}" in b_run.stderr and f"uses the ledger {a_ledger}" in b_run.stderr
    b_report = tmp_path / "b" / "B.xlsx"
    with RunLock(ledger_lock_path(a_ledger)):  # run B holds A's default ledger
        a_after = _process(field, a_report)
    assert a_after.returncode == EXIT_LOCKED, a_after.stderr
    assert not a_report.exists() and not b_report.exists()


def test_a_run_locked_out_of_its_ledger_writes_nothing_and_names_the_ledger(
    tmp_path: Path,
) -> None:
    field = _field(tmp_path / "in" / "f.png")
    ledger = tmp_path / "shared" / "ledger.sqlite"
    report = tmp_path / "out" / "r.xlsx"
    with RunLock(ledger_lock_path(ledger), held_for=f"uses the ledger {ledger}"):
        done = _process(field, report, "--ledger", str(ledger))
    assert done.returncode == EXIT_LOCKED, done.stderr
    assert f"uses the ledger {ledger}" in done.stderr
    assert "writes the same output" not in done.stderr
    assert not (tmp_path / "out").exists() or sorted(os.listdir(tmp_path / "out")) == ["r.lock"]
    assert not report.with_suffix(".log").exists() and not ledger.exists()


def test_locks_shared_by_an_output_and_a_ledger_are_taken_once(tmp_path: Path) -> None:
    """``--out L.sqlite.xlsx --ledger L.sqlite``: both are ``L.sqlite.lock``, held once."""
    locks = run_locks(tmp_path / "L.sqlite.xlsx", tmp_path / "L.sqlite")
    assert [lock.path.name for lock in locks.locks] == ["L.sqlite.lock"]
    with locks, pytest.raises(LockedError, match="uses the ledger"):
        run_locks(tmp_path / "other.xlsx", tmp_path / "L.sqlite").acquire()
    with run_locks(tmp_path / "other.xlsx", tmp_path / "L.sqlite"):  # all released
        pass


def test_a_run_locked_out_of_one_lock_holds_none(tmp_path: Path) -> None:
    report, ledger = tmp_path / "r.xlsx", tmp_path / "shared.sqlite"
    with RunLock(ledger_lock_path(ledger)), pytest.raises(LockedError):
        run_locks(report, ledger).acquire()
    RunLock(OutputPaths.for_report(report).lock).acquire().release()  # not left held
