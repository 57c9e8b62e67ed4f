"""Accuracy of :func:`smearscan.scale.estimate_pixel_size` against the txl-pbc RBC boxes.

Usage::

    .venv/bin/python benchmarks/scale_accuracy.py [--data ../shared/data]
        [--splits val] [--limit N] [--csv out.csv] [--jobs 2]

Truth, per image: the median over its RBC boxes (YOLO class 1) that are not cut by the
image border (no side within 2 px of it) of the box diameter ``(w + h) / 2`` in pixels.
The mean of the sides rather than the max: for a round cell both are the diameter; for
an oval cell of axes ``a >= b`` the estimator measures the equivalent diameter
``sqrt(a * b)``, which ``(a + b) / 2`` approximates within ~1% up to ``a / b = 1.3``
while ``max = a`` overshoots it by half the elongation; boxes also tend to be drawn a
few px loose, which the max would add in full. Fields with fewer than 5 such boxes are
skipped (too few RBCs for a truth, and for the estimator's ``min_rbcs``).

Compared with the estimate's ``median_rbc_diameter_px``; printed per source (sources told
apart by image size): n, success rate (no exception), median and 90th percentile of the
absolute relative error, the share of fields with error > 15 %, and the time per field.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from smearscan.errors import ScaleEstimationError  # noqa: E402
from smearscan.scale import estimate_pixel_size  # noqa: E402

MIN_TRUTH_BOXES = 5
BORDER_MARGIN_PX = 2.0
RBC_CLASS = 1
LARGE_ERROR = 0.15


@dataclass(frozen=True)
class Row:
    """One field: its truth, the estimate (NaN on failure) and the time taken."""

    image: str
    source: str
    n_truth_boxes: int
    truth_px: float
    estimate_px: float
    rbc_count: int
    rel_error: float
    seconds: float
    error: str


def source_of(width: int, height: int) -> str:
    """Name of the txl-pbc source of an image from its size (px)."""
    if (width, height) == (640, 480):
        return "BCCD"
    if (width, height) == (416, 416):
        return "BCD"
    if (width, height) == (575, 575):
        return "Raabin"
    if 355 <= width <= 370 and 355 <= height <= 375:
        return "PBC"
    return f"other {width}x{height}"


def truth_diameter_px(label_path: Path, width: int, height: int) -> tuple[int, float]:
    """Number of usable RBC boxes and their median ``(w + h) / 2`` diameter, px."""
    rows = [line.split() for line in label_path.read_text().splitlines() if line.strip()]
    boxes = np.array([[float(v) for v in r[1:5]] for r in rows if int(r[0]) == RBC_CLASS])
    if boxes.size == 0:
        return 0, float("nan")
    cx, cy = boxes[:, 0] * width, boxes[:, 1] * height
    w, h = boxes[:, 2] * width, boxes[:, 3] * height
    inside = (
        (cx - w / 2 > BORDER_MARGIN_PX)
        & (cy - h / 2 > BORDER_MARGIN_PX)
        & (cx + w / 2 < width - BORDER_MARGIN_PX)
        & (cy + h / 2 < height - BORDER_MARGIN_PX)
    )
    n = int(inside.sum())
    return n, float(np.median((w[inside] + h[inside]) / 2)) if n else float("nan")


def evaluate(image_path: Path) -> Row | None:
    """Truth and estimate of one field; ``None`` when it has too few truth boxes."""
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    label = image_path.parent.parent / "labels" / f"{image_path.stem}.txt"
    n_boxes, truth = truth_diameter_px(label, width, height) if label.exists() else (0, 0.0)
    if n_boxes < MIN_TRUTH_BOXES:
        return None
    t0 = time.perf_counter()
    try:
        est = estimate_pixel_size(rgb)
        estimate, count, error = est.median_rbc_diameter_px, est.rbc_count, ""
    except ScaleEstimationError as exc:
        estimate, count, error = float("nan"), 0, str(exc)
    seconds = time.perf_counter() - t0
    return Row(
        image=image_path.name,
        source=source_of(width, height),
        n_truth_boxes=n_boxes,
        truth_px=truth,
        estimate_px=estimate,
        rbc_count=count,
        rel_error=abs(estimate / truth - 1.0),
        seconds=seconds,
        error=error,
    )


def summarise(rows: list[Row]) -> None:
    """Print the per-source table (and the total)."""
    header = (
        f"{'source':<14}{'n':>5}{'success':>9}{'med|err|':>10}{'p90|err|':>10}"
        f"{'>15%':>8}{'med d_px':>10}{'ms/field':>10}"
    )
    print(header)
    print("-" * len(header))
    groups = [*sorted({r.source for r in rows}), "all"]
    for source in groups:
        sel = [r for r in rows if source in ("all", r.source)]
        ok = [r for r in sel if not r.error]
        errs = np.array([r.rel_error for r in ok])
        med = float(np.median(errs)) if errs.size else float("nan")
        p90 = float(np.percentile(errs, 90)) if errs.size else float("nan")
        # Failures are not counted as large errors: they are reported as such.
        large = float(np.mean(errs > LARGE_ERROR)) if errs.size else float("nan")
        truth = statistics.median(r.truth_px for r in sel)
        ms = 1000 * statistics.mean(r.seconds for r in sel)
        print(
            f"{source:<14}{len(sel):>5}{len(ok) / len(sel):>9.1%}{med:>10.1%}{p90:>10.1%}"
            f"{large:>8.1%}{truth:>10.1f}{ms:>10.1f}"
        )


def main() -> None:
    """Parse the arguments, evaluate the fields, print the table, write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--splits", nargs="+", default=["val"], choices=["val", "train"])
    parser.add_argument("--limit", type=int, default=0, help="fields per split (0: all)")
    parser.add_argument("--csv", type=Path, default=None, help="per-field rows to this file")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    args = parser.parse_args()
    paths: list[Path] = []
    for split in args.splits:
        found = sorted((args.data / "txl-pbc" / split / "images").glob("*.jpg"))
        paths += found[: args.limit] if args.limit > 0 else found
    if not paths:
        sys.exit(f"no txl-pbc images under {args.data}")
    cv2.setNumThreads(1)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = [r for r in pool.map(evaluate, paths, chunksize=4) if r is not None]
    print(f"{len(paths)} fields read, {len(rows)} with >= {MIN_TRUTH_BOXES} whole RBC boxes")
    summarise(rows)
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)
        print(f"per-field rows written to {args.csv}")


if __name__ == "__main__":
    main()
