"""A 40000x40000 tiled BigTIFF goes through `smearscan process` in bounded memory (slow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
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
    summary = pd.read_excel(tmp_path / "out" / "large.xlsx", sheet_name="Summary").iloc[0]
    assert summary["status"] == "ok" and summary["stitching"] == "zarr-stream"
    # the whole slide was segmented: red cells everywhere, nuclei and platelets found
    assert summary["rbc_area_fraction"] > 0.3
    assert summary["wbc_nucleus_area_fraction"] > 0 and summary["platelet_area_fraction"] > 0
    corner = group["labels/classes/s0"][-2048:, -2048:]
    assert (corner == 1).mean() > 0.2  # the last blocks were written too
    assert summary["wbc_count"] > 0  # the cell stage ran over the whole slide
    assert result["preview_size"] == [4096, 4096]  # overlay shrunk, built window by window
