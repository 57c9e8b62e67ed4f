"""Planning a batch never stalls on one file (issue #13, item 13).

A huge sparse file used to be hashed whole before any slide ran (8 GiB in 28 s,
outside ``--slide-timeout``). Now its header is read first: a file far larger
than the image its header claims, or with an invalid header, is refused without
being read; any other file is hashed within the slide's time limit.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from smearscan.batch import SlideTask, process_batch
from smearscan.batch_ledger import BatchLedger
from smearscan.config import ProcessConfig
from smearscan.errors import CorruptImageError
from smearscan.ledger import Ledger
from smearscan.slide_io import open_slide

GIB = 1 << 30


def _config(ledger: Path, **batch: object) -> ProcessConfig:
    config = ProcessConfig(model="classical").with_overrides(
        classify={"classifier": "rules"},
        scale={"pixel_size_um": 0.1},
        batch={"ledger": str(ledger), **batch},
    )
    return dataclasses.replace(
        config, output=dataclasses.replace(config.output, write_previews=False)
    )


def _bytes_read() -> int:
    """Bytes this process has read through read() calls so far (``/proc/self/io`` rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def _sparse_png(path: Path, size: int) -> Path:
    """A valid 64 x 64 PNG padded with a sparse tail to ``size`` bytes (no disk used)."""
    cv2.imwrite(str(path), np.full((64, 64, 3), 200, np.uint8))
    os.truncate(path, size)
    return path


@pytest.fixture()
def io_counter() -> None:
    if not Path("/proc/self/io").exists():
        pytest.skip("/proc/self/io (bytes read by this process) is Linux-only")


def test_a_huge_sparse_file_is_refused_unread_by_the_planning(
    tmp_path: Path, io_counter: None
) -> None:
    slide = _sparse_png(tmp_path / "padded.png", 8 * GIB)
    task = SlideTask(slide, "padded.png", "padded.png")
    ledger = BatchLedger(
        tmp_path / "l.sqlite", _config(tmp_path / "l.sqlite"), force=False, retry_failed=False
    )
    before = _bytes_read()
    todo, kept = ledger.plan([task])
    read = _bytes_read() - before
    ledger.close()
    assert read < 16 << 20, f"planning read {read / GIB:.2f} GiB of an 8 GiB sparse file"
    assert todo == [task] and kept == {}  # queued: its run fails at read and is recorded
    with Ledger.open(tmp_path / "l.sqlite") as book:
        identity = book.file_identity(slide)  # the ledger row's size and mtime are reused
    assert identity.sha256.startswith("head:") and not identity.hashed


def test_a_file_far_larger_than_its_image_fails_at_read_and_is_not_run_again(
    tmp_path: Path, io_counter: None
) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    _sparse_png(slides / "padded.png", 3 * GIB)
    tiff = slides / "tail.tif"
    tifffile.imwrite(tiff, np.full((64, 64, 3), 200, np.uint8), photometric="rgb")
    os.truncate(tiff, 2 * GIB)  # a valid TIFF, then a huge sparse tail
    cv2.imwrite(str(slides / "good.png"), np.full((64, 64, 3), 200, np.uint8))
    ledger = tmp_path / "l.sqlite"
    before = _bytes_read()
    first = process_batch([slides], tmp_path / "a" / "r.xlsx", _config(ledger))
    assert _bytes_read() - before < 256 << 20
    by_name = {r.slide: r for r in first.results}
    for name in ("padded.png", "tail.tif"):
        assert (by_name[name].status, by_name[name].error_stage) == ("failed", "read")
        assert "padded or damaged" in by_name[name].error and "GiB" in by_name[name].error
    second = process_batch([slides], tmp_path / "b" / "r.xlsx", _config(ledger))
    assert {r.slide: r.status for r in second.results}["padded.png"] == "skipped"
    assert second.processed == 0


def test_open_slide_refuses_a_padded_file_without_reading_it(
    tmp_path: Path, io_counter: None
) -> None:
    path = _sparse_png(tmp_path / "p.png", 300 << 20)  # 64 x 64 pixels claim at most ~64 MiB
    before = _bytes_read()
    with pytest.raises(CorruptImageError, match=r"claims a 64 x 64 image.*padded or damaged"):
        open_slide(path)
    assert _bytes_read() - before < 1 << 20


def test_hashing_stops_at_the_slide_timeout(tmp_path: Path) -> None:
    """A plausible but large file is hashed within --slide-timeout, else fails unrun."""
    slides = tmp_path / "slides"
    slides.mkdir()
    big = slides / "big.tif"  # uncompressed: 12 MiB, all plausible
    tifffile.imwrite(big, np.full((2048, 2048, 3), 200, np.uint8), photometric="rgb")
    ledger = tmp_path / "l.sqlite"
    batch = process_batch([slides], tmp_path / "r.xlsx", _config(ledger, slide_timeout_s=1e-9))
    (result,) = batch.results
    assert (result.status, result.error_stage) == ("failed", "timeout")
    assert "sha256 fingerprint not finished" in result.error
    assert "after reading 1 of 12 MiB" in result.error  # stopped after the first 1 MiB chunk
    assert batch.processed == 0
    with Ledger.open(ledger) as book:
        assert book.slides(None) == []  # never queued: the next night tries again
