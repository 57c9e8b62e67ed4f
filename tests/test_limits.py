"""Per-slide limits (issue #6, item 4): ``--slide-timeout`` and ``--max-memory``.

A slide over a limit fails with the reason in the Errors sheet, the stage
named ``timeout`` or ``memory``, and the batch goes on with the others.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from smearscan.batch import process_batch
from smearscan.cli import app
from smearscan.config import ProcessConfig
from smearscan.errors import ConfigError
from smearscan.limits import (
    SlideMemoryError,
    SlideTimeoutError,
    check_deadline,
    check_memory,
    deadline,
    memory_estimate,
)
from smearscan.synth import generate_field, write_field


def _config(**batch: object) -> ProcessConfig:
    config = ProcessConfig(model="classical").with_overrides(
        classify={"classifier": "rules"},
        scale={"pixel_size_um": 0.1},
        batch={"use_ledger": False, **batch},
    )
    return dataclasses.replace(
        config, output=dataclasses.replace(config.output, write_previews=False)
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    slides = tmp_path_factory.mktemp("slides")
    write_field(generate_field(1, 1200, 900), slides / "big.png")
    write_field(generate_field(2, 400, 300), slides / "small.png")
    for extra in slides.glob("*_truth.*"):
        extra.unlink()
    return slides


def test_deadline_is_per_thread_and_raises_once_passed() -> None:
    check_deadline("nothing")  # no deadline: never raises
    with deadline(0.01):
        time.sleep(0.05)
        with pytest.raises(SlideTimeoutError, match=r"--slide-timeout 0.01 s \(stopped before x"):
            check_deadline("x")
        seen: list[BaseException] = []

        def other() -> None:  # another slide's thread has no deadline of this one
            try:
                check_deadline("y")
            except BaseException as exc:
                seen.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen == []
    check_deadline("after")  # the deadline ends with its block


def test_slide_over_the_timeout_fails_and_the_batch_goes_on(folder: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.xlsx"
    batch = process_batch([folder], report, _config(slide_timeout_s=1e-6))
    assert [r.status for r in batch.results] == ["failed", "failed"]
    assert {r.error_stage for r in batch.results} == {"timeout"}
    errors = pd.read_excel(report, sheet_name="Errors")
    assert sorted(errors["slide"]) == ["big.png", "small.png"]
    assert errors["message"].str.contains("took longer than --slide-timeout").all()
    assert not any((tmp_path / "r.zarr").glob("*/zarr.json"))  # no group of a failed slide

    relaxed = process_batch([folder], tmp_path / "ok.xlsx", _config(slide_timeout_s=3600))
    assert [r.status for r in relaxed.results] == ["ok", "ok"]


def test_slide_over_the_memory_limit_fails_before_it_starts(folder: Path, tmp_path: Path) -> None:
    small_only = process_batch([folder], tmp_path / "r.xlsx", _config(max_memory_mb=30))
    by_name = {r.slide: r for r in small_only.results}
    assert by_name["small.png"].status == "ok"
    big = by_name["big.png"]
    assert (big.status, big.error_stage) == ("failed", "memory")
    assert "more than --max-memory 30 MB" in big.error and big.tiles == 0


def test_memory_estimate_parts() -> None:
    common = dict(
        source_bytes=2592 * 1944 * 3,
        mask_shape=(1944, 2592),
        n_classes=5,
        stream_px=256 * 2592,
        tile_px=1344,
        batch_size=1,
        network=True,
    )
    whole = memory_estimate(in_memory=True, **common)
    streamed = memory_estimate(in_memory=False, **common)
    assert whole.source_mib == pytest.approx(14.4, abs=0.1)
    assert whole.masks_mib > 5 * streamed.masks_mib  # one block row of 256 instead of 1944 rows
    assert whole.inference_mib == pytest.approx(1344 * 1344 * 400 / 2**20)
    check_memory(whole, None)
    check_memory(whole, int(whole.total_mib) + 1)
    with pytest.raises(SlideMemoryError, match="decoded source 14"):
        check_memory(whole, int(whole.total_mib) - 1)


def test_limits_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="slide_timeout_s"):
        _config(slide_timeout_s=0)
    with pytest.raises(ConfigError, match="max_memory_mb"):
        _config(max_memory_mb=-5)
    runner = CliRunner()
    out = str(tmp_path / "r.xlsx")
    for option in (["--slide-timeout", "0"], ["--max-memory", "0"]):
        result = runner.invoke(app, ["process", str(tmp_path), "--out", out, *option])
        assert result.exit_code == 2, result.output
