"""Nightly re-run: how long ``smearscan process`` takes over a folder whose slides are all done.

Target (issue #6): a re-run over 100 done slides finishes in under 2 s, and
adding one slide processes exactly that slide.

The benchmark writes ``--slides`` synthetic camera fields into
``WORKDIR/slides`` and processes them once with the real CLI (the default
model and classifier unless told otherwise; this takes minutes on a CPU and
is skipped when ``WORKDIR`` already holds the finished run). It then times
``--repeats`` re-runs of the same command, wall clock of the whole
subprocess (interpreter start, imports, ledger lookups, report and review
page), and finally adds one field and checks that only it is processed.

    .venv/bin/python benchmarks/rerun.py --workdir /tmp/rerun-bench --slides 100

Prints one line per measurement and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from smearscan.synth import generate_field, write_field


def _process(workdir: Path, extra: list[str]) -> tuple[float, int, str]:
    """Run the CLI once; (wall seconds, exit code, slides processed per the Run sheet)."""
    command = [
        sys.executable, "-m", "smearscan", "process", str(workdir / "slides"),
        "--out", str(workdir / "out" / "report.xlsx"), "--quiet", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"smearscan process failed ({done.returncode}):\n{done.stderr}")
    run = pd.read_excel(workdir / "out" / "report.xlsx", sheet_name="Run", index_col=0)
    return seconds, done.returncode, str(run.loc["slides_processed"].iloc[0])


def _write_fields(folder: Path, seeds: range, width: int, height: int, wbc: int | None) -> None:
    for seed in seeds:
        path = folder / f"field_{seed:04d}.png"
        if not path.exists():
            write_field(generate_field(seed, width, height, n_wbc=wbc), path)
    for extra in folder.glob("*_truth.*"):
        extra.unlink()


def _cells_rows(workdir: Path) -> int:
    return len(pd.read_excel(workdir / "out" / "report.xlsx", sheet_name="Cells"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--slides", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=2592)
    parser.add_argument("--height", type=int, default=1944)
    parser.add_argument("--workers", type=int, default=2, help="for the first, full run")
    parser.add_argument(
        "--wbc",
        type=int,
        default=None,
        help="WBCs per field (default: the generator's, 15 per 2592x1944 field, a dense "
        "worst case; a normal smear has about 1-2 per 100x camera field)",
    )
    parser.add_argument("--fresh", action="store_true", help="start from an empty workdir")
    parser.add_argument("extra", nargs="*", help="more process options, after --")
    args = parser.parse_args()

    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    slides = args.workdir / "slides"
    _write_fields(slides, range(args.slides), args.width, args.height, args.wbc)
    seconds, code, processed = _process(args.workdir, ["--workers", str(args.workers), *args.extra])
    print(f"first run: {seconds:.1f} s, {processed} slide(s) processed, exit {code}")

    times = []
    for i in range(args.repeats):
        seconds, code, processed = _process(args.workdir, args.extra)
        times.append(seconds)
        print(f"re-run {i + 1}: {seconds:.2f} s, {processed} slide(s) processed, exit {code}")
        if processed != "0":
            sys.exit(f"a re-run over an unchanged folder processed {processed} slide(s)")

    cells = _cells_rows(args.workdir)  # of the N done slides
    added = args.slides + 1 + time.time_ns() % 1_000_000  # content the ledger has never seen
    _write_fields(slides, range(added, added + 1), args.width, args.height, args.wbc)
    added_s, code, processed_added = _process(args.workdir, args.extra)
    print(f"one slide added: {added_s:.2f} s, {processed_added} slide(s) processed, exit {code}")
    (slides / f"field_{added:04d}.png").unlink()  # the workdir stays a set of N slides
    print(
        json.dumps(
            {
                "slides_done": args.slides,
                "field_px": [args.width, args.height],
                "wbc_per_field": args.wbc,
                "cells_rows": cells,
                "rerun_s_median": round(statistics.median(times), 3),
                "rerun_s_max": round(max(times), 3),
                "rerun_s_all": [round(t, 3) for t in times],
                "added_one_processed": processed_added,
                "added_one_s": round(added_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
