"""Cross-validated Dice on wbc-seg at the source resolution, through ``process``.

Scores the folds of a ``smearscan train --folds K`` run: each fold's
``best.pt`` processes the wbc-seg images it never trained on (its
``val_images.txt``) with the real batch path (the set's pixel size given, as
with ``--pixel-size``), and ``labels/nuclei`` and ``labels/cells`` are compared
with the expert masks at the source resolution (``smearscan.scoring``). Every
image is held out by exactly one fold, so the means below cover each image
once. Prints the mean (and median) nucleus and whole-cell Dice per set, per
fold and over all folds: of every predicted cell of the image, and of the
annotated cell alone (the predicted cells overlapping the expert's cell; wbc-seg
outlines one white cell per image and leaves neighbours cut by the border unlabelled).

Usage::

    .venv/bin/python benchmarks/cv_wbcseg.py CV_DIR [--data ../shared/data] [--csv out.csv]
        [--fold N ...]
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import tempfile
from pathlib import Path

from smearscan.evaluation import WBC_SEG_PIXEL_SIZE_UM
from smearscan.scoring import quiet_config, run_model, score_images
from smearscan.train_data import DataSource, list_annotated

REPO_ROOT = Path(__file__).resolve().parents[1]


def score_fold(fold: Path, data: Path, work: Path) -> list[dict[str, object]]:
    """Per-image rows of the wbc-seg images held out by one fold."""
    held_out = set((fold / "val_images.txt").read_text().split())
    rows: list[dict[str, object]] = []
    for name, pixel_size in WBC_SEG_PIXEL_SIZE_UM.items():
        source = DataSource(data / "wbc-seg" / name, pixel_size)
        items = [
            i for i in list_annotated(source.path) if f"{source.name}/{i.image.name}" in held_out
        ]
        if not items:
            continue
        slides = run_model(source, items, str(fold / "best.pt"), quiet_config(), work / name)
        for row in score_images(items, slides, name):
            rows.append({"fold": fold.name, **row})
    return rows


def line(rows: list[dict[str, object]], label: str) -> str:
    """Mean and (median) Dice of a group of rows."""
    parts = [f"{label:22s} n={len(rows):4d}"]
    for key in ("nucleus_dice", "cell_dice", "annotated_nucleus_dice", "annotated_cell_dice"):
        values = [float(r[key]) for r in rows]  # type: ignore[arg-type]
        parts.append(f"{key} {statistics.mean(values):.4f} ({statistics.median(values):.4f})")
    return "  ".join(parts)


def main() -> None:
    """Score every fold and print the cross-validated Dice."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dir", type=Path, help="output folder of smearscan train --folds K")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--csv", type=Path, help="write the per-image rows here")
    parser.add_argument(
        "--fold", type=int, action="append", help="score only this fold (repeatable)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    folds = sorted(args.cv_dir.glob("fold*"), key=lambda p: int(p.name[4:]))
    if args.fold:
        folds = [f for f in folds if int(f.name[4:]) in args.fold]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for fold in folds:
            fold_rows = score_fold(fold, args.data, Path(tmp) / fold.name)
            for name in WBC_SEG_PIXEL_SIZE_UM:
                mine = [r for r in fold_rows if r["source"] == name]
                if mine:
                    print(line(mine, f"{fold.name} {name}"))
            rows.extend(fold_rows)
    print(f"{len(folds)} folds together (each of their held-out images once):")
    for name in WBC_SEG_PIXEL_SIZE_UM:
        print(line([r for r in rows if r["source"] == name], name))
    if args.csv:
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
