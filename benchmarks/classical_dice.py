"""Dice of the classical segmenter on the wbc-seg reference sets (jiangxi, cellavision).

Usage::

    .venv/bin/python benchmarks/classical_dice.py [--data ../shared/data] [--csv out.csv]

Per image, through the product's own path (smearscan.evaluation.segment_at_source):
resample to the model scale (0.25 um/px), calibrate on that image, tiled segmentation,
blended probabilities back to the source grid, argmax; then Dice of the nucleus
(class 3 vs mask 255) and of the whole cell (classes 2|3 vs mask 128|255).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

from smearscan.evaluation import WBC_SEG_PIXEL_SIZE_UM, MaskScore, evaluate_mask_set
from smearscan.segmenters import ClassicalSegmenter

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print per-set statistics, optionally write a CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--pixel-size-jiangxi", type=float, default=WBC_SEG_PIXEL_SIZE_UM["jiangxi"]
    )
    parser.add_argument(
        "--pixel-size-cellavision", type=float, default=WBC_SEG_PIXEL_SIZE_UM["cellavision"]
    )
    parser.add_argument("--limit", type=int, default=None, help="images per set (default all)")
    parser.add_argument("--csv", type=Path, default=None, help="write per-image scores here")
    args = parser.parse_args(argv)
    model = ClassicalSegmenter().eval()
    sets = {"jiangxi": args.pixel_size_jiangxi, "cellavision": args.pixel_size_cellavision}
    rows: list[tuple[str, MaskScore]] = []
    for name, pixel_size in sets.items():
        start = time.perf_counter()
        folder = args.data / "wbc-seg" / name
        set_rows = list(evaluate_mask_set(model, folder, pixel_size, limit=args.limit))
        rows += [(name, r) for r in set_rows]
        nuc = [r.nucleus_dice for r in set_rows]
        cell = [r.cell_dice for r in set_rows]
        print(
            f"{name:12s} n={len(set_rows):4d} px={pixel_size:.3f} um  "
            f"nucleus Dice mean {statistics.mean(nuc):.3f} median {statistics.median(nuc):.3f}  "
            f"cell Dice mean {statistics.mean(cell):.3f} median {statistics.median(cell):.3f}  "
            f"({time.perf_counter() - start:.1f} s)"
        )
    if args.csv is not None:
        with args.csv.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["dataset", "image", "nucleus_dice", "cell_dice"])
            writer.writerows(
                (name, r.image, f"{r.nucleus_dice:.4f}", f"{r.cell_dice:.4f}") for name, r in rows
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
