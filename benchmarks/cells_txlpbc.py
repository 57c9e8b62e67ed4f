"""WBC detection and RBC / platelet counts against the TXL-PBC boxes.

Each image of ``txl-pbc/<split>/images`` goes through ``process_slide`` (pixel
size estimated from the RBCs, as in a real run). A predicted WBC matches a
truth WBC box when its centroid lies inside the box (one-to-one, greedy by
distance to the box centre). Reported per source (told apart by image size)
and overall: WBC recall, precision and F1; mean absolute relative error of
the RBC and platelet counts (truth = number of boxes); images that failed.
Then every source is run again with one pixel size for all its images (the
median of its per-image estimates), as a lab sets its camera's pixel size
once: images with too few RBCs for an estimate are then processed too.

Usage::

    .venv/bin/python benchmarks/cells_txlpbc.py [--split val] [--limit N] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from smearscan.config import ProcessConfig, ScaleConfig
from smearscan.errors import ProcessingError
from smearscan.pipeline import process_slide

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = {(640, 480): "BCCD", (416, 416): "BCD", (575, 575): "Raabin"}


def read_boxes(label_file: Path, width: int, height: int) -> dict[int, np.ndarray]:
    """YOLO boxes per class as float ``(n, 4)`` x0, y0, x1, y1 in pixels."""
    boxes: dict[int, list[list[float]]] = defaultdict(list)
    for line in label_file.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue
        cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:])
        boxes[cls].append(
            [
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
            ]
        )
    return {k: np.asarray(v) for k, v in boxes.items()}


def match(points: np.ndarray, boxes: np.ndarray) -> int:
    """Number of one-to-one matches of points (x, y) to boxes containing them."""
    if len(points) == 0 or len(boxes) == 0:
        return 0
    inside = (
        (points[:, None, 0] >= boxes[None, :, 0])
        & (points[:, None, 0] <= boxes[None, :, 2])
        & (points[:, None, 1] >= boxes[None, :, 1])
        & (points[:, None, 1] <= boxes[None, :, 3])
    )
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    dist = np.linalg.norm(points[:, None, :] - centres[None], axis=2)
    used_p, used_b, n = set(), set(), 0
    for p, b in sorted(zip(*np.nonzero(inside), strict=True), key=lambda pb: dist[pb]):
        if p not in used_p and b not in used_b:
            used_p.add(p)
            used_b.add(b)
            n += 1
    return n


def evaluate(
    images: list[Path], workdir: Path, pixel_sizes: dict[str, float] | None = None
) -> list[dict[str, object]]:
    """One row of counts per image.

    Args:
        images: Image files of one split.
        workdir: Scratch folder for the Zarr output.
        pixel_sizes: Pixel size (um/px) to give per source, as a lab sets its
            camera's once; a source not in it is estimated from the RBCs.
    """
    import cv2

    rows = []
    for path in images:
        h, w = cv2.imread(str(path)).shape[:2]
        boxes = read_boxes(path.parent.parent / "labels" / f"{path.stem}.txt", w, h)
        row: dict[str, object] = {
            "image": path.name,
            "source": SOURCES.get((w, h), "PBC"),
            "wbc_true": len(boxes.get(0, [])),
            "rbc_true": len(boxes.get(1, [])),
            "platelet_true": len(boxes.get(2, [])),
        }
        given = (pixel_sizes or {}).get(str(row["source"]))
        config = ProcessConfig(scale=ScaleConfig(pixel_size_um=given))
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
            wbc_matched=match(points.reshape(-1, 2), boxes.get(0, np.zeros((0, 4)))),
            pixel_size_um=result.pixel_size_um,
        )
        rows.append(row)
    return rows


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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    images = sorted((args.data / "txl-pbc" / args.split / "images").glob("*.jpg"))[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        rows = evaluate(images, Path(tmp))
        print("pixel size estimated per image (failed images count as missed WBCs):")
        for source in sorted({str(r["source"]) for r in rows}):
            print(summarise([r for r in rows if r["source"] == source], source))
        print(summarise(rows, "all"))
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
            again = {str(r["image"]): r for r in evaluate(redo, Path(tmp), fixed)}
            rows = [again.get(str(r["image"]), r) for r in rows]
            print(
                "pixel size set per source ("
                + ", ".join(f"{s} {v:.3f} um/px" for s, v in fixed.items())
                + "; median of its estimates):"
            )
            for source in sorted({str(r["source"]) for r in rows}):
                print(summarise([r for r in rows if r["source"] == source], source))
            print(summarise(rows, "all"))
    if args.csv:
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
