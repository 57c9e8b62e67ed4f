"""``process --ledger``: a re-run processes only what is new, and reports everything.

Real runs of ``process_batch`` (classical segmenter, rules, small synthetic
fields) against one SQLite ledger: the first run processes every slide; a
re-run over the unchanged folder processes none and writes the same cells from
the stored results; one added slide is the only one processed; a changed
setting, ``--force`` and ``--retry-failed`` bring slides back.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from smearscan.batch import process_batch
from smearscan.config import ProcessConfig
from smearscan.errors import ConfigError
from smearscan.ledger import Ledger
from smearscan.synth import generate_field, write_field


def _config(ledger: Path, **batch: object) -> ProcessConfig:
    config = ProcessConfig(model="classical").with_overrides(
        classify={"classifier": "rules"},
        scale={"pixel_size_um": 0.1},
        batch={"ledger": str(ledger), **batch},
    )
    return dataclasses.replace(
        config, output=dataclasses.replace(config.output, write_previews=False)
    )


def _cells(report: Path) -> pd.DataFrame:
    cells = pd.read_excel(report, sheet_name="Cells")
    return cells.sort_values(["slide", "cell_id"]).reset_index(drop=True)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    slides = tmp_path / "slides"
    for seed in (1, 2):
        write_field(generate_field(seed, 600, 500), slides / f"field{seed}.png")
    (slides / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for extra in slides.glob("*_truth.*"):
        extra.unlink()
    return slides


def test_rerun_processes_only_what_is_new(folder: Path, tmp_path: Path):
    ledger = tmp_path / "ledger.sqlite"
    first = process_batch([folder], tmp_path / "n1" / "r.xlsx", _config(ledger))
    assert first.processed == 3 and len(first.failed) == 1

    second = process_batch([folder], tmp_path / "n2" / "r.xlsx", _config(ledger))
    assert second.processed == 0
    assert [r.status for r in second.results] == ["skipped", "ok", "ok"]
    assert "not run again (failed" in second.results[0].error
    pd.testing.assert_frame_equal(
        _cells(tmp_path / "n1" / "r.xlsx"), _cells(tmp_path / "n2" / "r.xlsx")
    )

    write_field(generate_field(3, 600, 500), folder / "field3.png")
    third = process_batch([folder], tmp_path / "n3" / "r.xlsx", _config(ledger))
    assert third.processed == 1
    assert {r.slide: r.status for r in third.results}["field3.png"] == "ok"

    retry = process_batch([folder], tmp_path / "n4" / "r.xlsx", _config(ledger, retry_failed=True))
    assert retry.processed == 1 and retry.failed[0].slide == "broken.png"

    forced = process_batch([folder], tmp_path / "n5" / "r.xlsx", _config(ledger, force=True))
    assert forced.processed == 4

    with Ledger.open(ledger) as book:
        runs = book.summary(last_runs=10)["runs"]
    assert len(runs) == 5 and all(r["status"] == "finished" for r in runs)


def test_changed_content_or_settings_run_again(folder: Path, tmp_path: Path):
    ledger = tmp_path / "ledger.sqlite"
    process_batch([folder], tmp_path / "a" / "r.xlsx", _config(ledger))
    shutil.copy(folder / "field2.png", folder / "field1.png")  # new content, same name
    again = process_batch([folder], tmp_path / "b" / "r.xlsx", _config(ledger))
    assert again.processed == 1
    changed = _config(ledger).with_overrides(cells={"min_cell_area_um2": 25.0})
    assert process_batch([folder], tmp_path / "c" / "r.xlsx", changed).processed == 3


def test_default_ledger_beside_the_report(folder: Path, tmp_path: Path):
    report = tmp_path / "out" / "r.xlsx"
    config = _config(tmp_path / "unused.sqlite")
    config = dataclasses.replace(config, batch=dataclasses.replace(config.batch, ledger=None))
    assert process_batch([folder], report, config).processed == 3
    assert (tmp_path / "out" / "r_ledger.sqlite").is_file()
    assert not (tmp_path / "unused.sqlite").exists()
    assert process_batch([folder], report, config).processed == 0
    off = config.with_overrides(batch={"use_ledger": False})
    assert process_batch([folder], report, off).processed == 3


def test_a_slide_whose_masks_were_removed_runs_again(folder: Path, tmp_path: Path):
    ledger = tmp_path / "ledger.sqlite"
    first = process_batch([folder], tmp_path / "a" / "r.xlsx", _config(ledger))
    shutil.rmtree(next(r for r in first.results if r.slide == "field1.png").mask_path)
    again = process_batch([folder], tmp_path / "a" / "r.xlsx", _config(ledger))
    assert again.processed == 1
    assert Path(next(r for r in again.results if r.slide == "field1.png").mask_path).is_dir()


def test_since_reports_the_ledger_slides_of_the_period(folder: Path, tmp_path: Path):
    ledger = tmp_path / "ledger.sqlite"
    night1 = process_batch([folder], tmp_path / "n1" / "r.xlsx", _config(ledger))
    assert night1.processed == 3
    after_night1 = datetime.now(UTC).isoformat()
    write_field(generate_field(7, 600, 500), folder / "field7.png")

    # tonight over the grown folder, reporting tonight only: just the new slide
    tonight = process_batch(
        [folder], tmp_path / "n2" / "r.xlsx", _config(ledger, since=after_night1)
    )
    assert tonight.processed == 1
    assert [r.slide for r in tonight.results] == ["field7.png"]

    # a report over the whole ledger from one file of it: nothing processed
    other = tmp_path / "elsewhere"
    write_field(generate_field(8, 600, 500), other / "field8.png")
    everything = process_batch(
        [other / "field8.png"], tmp_path / "n3" / "r.xlsx", _config(ledger, since="all")
    )
    assert everything.processed == 1
    names = [r.slide for r in everything.results]
    assert names == ["field8.png", "broken.png", "field1.png", "field2.png", "field7.png"]
    assert {r.slide: r.status for r in everything.results}["broken.png"] == "failed"
    cells = _cells(tmp_path / "n3" / "r.xlsx")
    earlier = _cells(tmp_path / "n1" / "r.xlsx")
    pd.testing.assert_frame_equal(
        cells[cells.slide.isin(["field1.png", "field2.png"])].reset_index(drop=True), earlier
    )
    errors = pd.read_excel(tmp_path / "n3" / "r.xlsx", sheet_name="Errors")
    assert errors["slide"].tolist() == ["broken.png"]

    future = process_batch(
        [other / "field8.png"], tmp_path / "n4" / "r.xlsx", _config(ledger, since="2999-01-01")
    )
    assert future.processed == 0 and future.results == []


def test_since_needs_a_ledger_and_a_valid_time(folder: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="since"):
        _config(tmp_path / "l.sqlite", since="last tuesday")
    no_ledger = _config(tmp_path / "l.sqlite", since="7d", use_ledger=False)
    with pytest.raises(ConfigError, match="--no-ledger"):
        process_batch([folder], tmp_path / "r.xlsx", no_ledger)
