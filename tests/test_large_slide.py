"""A 40000x40000 tiled BigTIFF goes through `smearscan process` in bounded memory (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr

from benchmarks.large_slide import run_large_slide

pytestmark = pytest.mark.slow

PEAK_RSS_LIMIT_MIB = 2048


def test_40000_square_tiff_with_classical_segmenter(tmp_path: Path):
    result = run_large_slide(tmp_path, size=40000, pixel_size_um=0.25)
    assert result["exit_code"] == 0, result["stderr_tail"]
    assert result["classes_shape"] == [40000, 40000]
    assert result["peak_rss_mib"] < PEAK_RSS_LIMIT_MIB, result
    group = zarr.open_group(tmp_path / "out" / "large.zarr" / "large.tif", mode="r")
    assert group.attrs["smearscan"]["pixel_size_method"] == "file metadata"
    window = group["labels/classes/0"][20000:21024, 20000:21024]
    assert (window == 1).mean() > 0.2  # red cells found in the middle of the slide
    assert (window == 3).any()  # and nuclei
