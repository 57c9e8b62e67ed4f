"""WBC detection and RBC / platelet counts against the TXL-PBC boxes.

Each image of ``txl-pbc/<split>/images`` goes through ``process_slide`` (pixel
size estimated from the RBCs, as in a real run). A predicted WBC matches a
truth WBC box when its centroid lies inside the box (one-to-one, greedy by
distance to the box centre). Reported per source (told apart by image size)
and overall: WBC recall, precision and F1; mean absolute relative error of
the RBC and platelet counts (truth = number of boxes); images that failed.
Then every source is run again with one pixel size for all its images (the
median of its per-image estimates), as a lab sets its camera's pixel size
once: images with too few RBCs for an estimate are then processed too. Last,
each source gets the pixel size measured on the annotated ``train`` split (the
median over its fields of the median whole RBC box, 7.5 µm across: the scale
``smearscan train`` used), as a lab calibrates its camera on annotated fields.

Usage::

    .venv/bin/python benchmarks/cells_txlpbc.py [--model NAME|PATH.pt] [--split val]
        [--limit N] [--csv out.csv] [--calibrated-only]
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
from pathlib import Path

import numpy as np

from smearscan.config import DEFAULT_MODEL, ProcessConfig, ScaleConfig
from smearscan.datasets import image_size, read_yolo_boxes
from smearscan.errors import ProcessingError
from smearscan.pipeline import process_slide
from smearscan.scoring import match_points_in_boxes
from smearscan.train_data import rbc_box_pixel_size

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = {(640, 480): "BCCD", (416, 416): "BCD", (575, 575): "Raabin"}


def evaluate(
    images: list[Path], workdir: Path, model: str, pixel_sizes: dict[str, float] | None = None
) -> list[dict[str, object]]:
    """One row of counts per image.

    Args:
        images: Image files of one split.
        workdir: Scratch folder for the Zarr output.
        model: ``--model`` value.
        pixel_sizes: Pixel size (um/px) to give per source, as a lab sets its
            camera's once; a source not in it is estimated from the RBCs.
    """
    rows = []
    for path in images:
        w, h = image_size(path)
        boxes = read_yolo_boxes(path.parent.parent / "labels" / f"{path.stem}.txt", w, h)
        wbc = [b for b in boxes if b.label == "wbc"]
        row: dict[str, object] = {
            "image": path.name,
            "source": SOURCES.get((w, h), "PBC"),
            "wbc_true": len(wbc),
            "rbc_true": sum(b.label == "rbc" for b in boxes),
            "platelet_true": sum(b.label == "platelet" for b in boxes),
        }
        given = (pixel_sizes or {}).get(str(row["source"]))
        config = ProcessConfig(model=model, scale=ScaleConfig(pixel_size_um=given))
        try:
            result = process_slide(path, config, workdir / "m.zarr")
        except ProcessingError as exc:
            row.update(status=f"failed at {exc.stage}")
            rows.append(row)
            continue
        points = np.array([[c["centroid_x"], c["centroid_y"]] for c in result.cells])
        row.update(
            status="ok",
            wbc_pred=len(points),
            rbc_pred=result.rbc_count,
            platelet_pred=result.platelet_count,
            wbc_matched=match_points_in_boxes(points.reshape(-1, 2), wbc),
            pixel_size_um=result.pixel_size_um,
        )
        rows.append(row)
    return rows


def box_pixel_sizes(split_dir: Path) -> dict[str, float]:
    """Per source, the median over a split's fields of the RBC-box pixel size (um/px)."""
    sizes: dict[str, list[float]] = {}
    for path in sorted((split_dir / "images").glob("*.jpg")):
        w, h = image_size(path)
        boxes = read_yolo_boxes(split_dir / "labels" / f"{path.stem}.txt", w, h)
        if (size := rbc_box_pixel_size(boxes, w, h)) is not None:
            sizes.setdefault(SOURCES.get((w, h), "PBC"), []).append(size)
    return {source: float(np.median(v)) for source, v in sorted(sizes.items())}


def print_groups(rows: list[dict[str, object]]) -> None:
    """One line per source, then overall."""
    for source in sorted({str(r["source"]) for r in rows}):
        print(summarise([r for r in rows if r["source"] == source], source))
    print(summarise(rows, "all"))


def summarise(rows: list[dict[str, object]], name: str) -> str:
    """One line of metrics for a group of rows."""
    ok = [r for r in rows if r["status"] == "ok"]
    true = sum(int(r["wbc_true"]) for r in rows)  # failed images count as misses
    pred = sum(int(r["wbc_pred"]) for r in ok)
    hit = sum(int(r["wbc_matched"]) for r in ok)
    recall, precision = hit / max(1, true), hit / max(1, pred)
    f1 = 2 * recall * precision / max(1e-9, recall + precision)

    def count_error(kind: str) -> float:
        errs = [
            abs(int(r[f"{kind}_pred"]) - int(r[f"{kind}_true"])) / int(r[f"{kind}_true"])
            for r in ok
            if int(r[f"{kind}_true"]) > 0
        ]
        return float(np.mean(errs)) if errs else float("nan")

    return (
        f"{name:8s} n={len(rows):4d} failed={len(rows) - len(ok):3d}  WBC recall "
        f"{recall:.3f} precision {precision:.3f} F1 {f1:.3f}  |RBC err| "
        f"{count_error('rbc'):.3f}  |platelet err| {count_error('platelet'):.3f}"
    )


def main() -> None:
    """Run on one split and print the metrics per source and overall."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or PATH.pt")
    parser.add_argument(
        "--calibrated-only",
        action="store_true",
        help="only the run with each source's pixel size from the train split's RBC boxes",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    images = sorted((args.data / "txl-pbc" / args.split / "images").glob("*.jpg"))[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        calibrated = box_pixel_sizes(args.data / "txl-pbc" / "train")
        print(
            "pixel size set per source from the train split's RBC boxes ("
            + ", ".join(f"{s} {v:.3f} um/px" for s, v in calibrated.items())
            + "):"
        )
        print_groups(evaluate(images, Path(tmp), args.model, calibrated))
        if args.calibrated_only:
            return
        rows = evaluate(images, Path(tmp), args.model)
        print("pixel size estimated per image (failed images count as missed WBCs):")
        print_groups(rows)
        # what a lab does once per camera: set the pixel size; here the median of the
        # per-image estimates of each source
        fixed = {
            source: float(np.median([r["pixel_size_um"] for r in ok]))
            for source in sorted({str(r["source"]) for r in rows})
            if (ok := [r for r in rows if r["source"] == source and r["status"] == "ok"])
        }
        if fixed:
            redo = [
                Path(args.data / "txl-pbc" / args.split / "images" / str(r["image"]))
                for r in rows
                if r["source"] in fixed
            ]
            again = {str(r["image"]): r for r in evaluate(redo, Path(tmp), args.model, fixed)}
            rows = [again.get(str(r["image"]), r) for r in rows]
            print(
                "pixel size set per source ("
                + ", ".join(f"{s} {v:.3f} um/px" for s, v in fixed.items())
                + "; median of its estimates):"
            )
            print_groups(rows)
    if args.csv:
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
