"""Process a 40000x40000 tiled BigTIFF with the classical segmenter; report time and peak RSS.

The slide is written by ``smearscan.synth.write_large_tiff`` (JPEG tiles,
resolution tags giving the pixel size) and processed by the real command
``python -m smearscan process`` in a child process, whose peak resident set
size is read from ``getrusage(RUSAGE_CHILDREN)``.

Usage::

    .venv/bin/python benchmarks/large_slide.py [--size 40000] [--pixel-size 0.25] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zarr
from PIL import Image

from smearscan.synth import write_large_tiff


def run_large_slide(
    workdir: Path, size: int, pixel_size_um: float, extra_args: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Write the slide, process it in a child process, and measure.

    Returns:
        Timings (s), the child's peak RSS (MiB), exit code and output shapes.
    """
    tiff = workdir / "large.tif"
    start = time.perf_counter()
    write_large_tiff(tiff, width=size, height=size, pixel_size_um=pixel_size_um)
    write_s = time.perf_counter() - start
    report = workdir / "out" / "large.xlsx"
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "smearscan",
            "process",
            str(tiff),
            "--out",
            str(report),
            "--quiet",
            "--model",
            "classical",
            *extra_args,
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    process_s = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result: dict[str, Any] = {
        "size_px": size,
        "pixel_size_um": pixel_size_um,
        "tiff_mb": tiff.stat().st_size / 2**20,
        "write_tiff_s": round(write_s, 1),
        "process_s": round(process_s, 1),
        "peak_rss_mib": round(peak_mib, 1),
        "exit_code": proc.returncode,
        "stderr_tail": proc.stderr[-2000:],
    }
    if proc.returncode == 0:
        group = zarr.open_group(report.with_suffix(".zarr") / "large.tif", mode="r")
        result["classes_shape"] = list(group["labels/classes/s0"].shape)
        overlay = report.parent / f"{report.stem}_previews" / "large.tif.png"
        if overlay.is_file():
            with Image.open(overlay) as png:
                result["preview_size"] = list(png.size)
        result["zarr_mb"] = round(
            sum(f.stat().st_size for f in report.with_suffix(".zarr").rglob("*") if f.is_file())
            / 2**20,
            1,
        )
    return result


def main() -> None:
    """Parse options, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=40000, help="slide side in pixels")
    parser.add_argument("--pixel-size", type=float, default=0.25, help="µm/px of the slide")
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="smearscan-large-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_large_slide(workdir, args.size, args.pixel_size)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
