"""Cells found by ``smearscan process`` against the exact truth of synthetic fields.

Synthetic 2592x1944 fields (``smearscan.synth``, seeds ``0..N-1``; seeds 0-2 are
the fields of ``sample_slides/``) are written as JPEG and processed by the real
batch path with the default settings (pixel size estimated from the RBCs).
``labels/cells`` is brought back to the source grid and matched one-to-one to
the true cells (IoU >= 0.5). Reported per field and overall:

* WBC count vs truth, WBCs missed / extra, smallest IoU and share with IoU >= 0.8;
* touching pairs split (both cells matched to different labels);
* RBC and platelet counts vs truth (relative error);
* seconds of the cell stage (instances, labels, morphometry, types) per field.

Usage::

    .venv/bin/python benchmarks/cells_synthetic.py [--fields 10] [--samples] [--model NAME]

``--samples`` runs the three fields of ``sample_slides/`` instead of generating.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import zarr

from smearscan.config import DEFAULT_MODEL, ProcessConfig
from smearscan.evaluation import match_instances
from smearscan.pipeline import process_batch
from smearscan.resample import array_reader
from smearscan.review import preview_arrays
from smearscan.synth import generate_field, load_truth, write_field

REPO_ROOT = Path(__file__).resolve().parents[1]


def score_slide(result) -> dict[str, float]:
    """Match one processed synthetic field against its truth."""
    field = load_truth(result.path)
    labels = zarr.open_group(result.mask_path, mode="r")["labels/cells/s0"]
    s = labels.shape[0] / result.height
    _, cells = preview_arrays(
        array_reader(field.image), labels, (result.height, result.width), s, 10**6
    )
    score = match_instances(field.cells, cells, min_iou=0.5)
    matched = {t: p for t, p, _ in score.matches}
    pairs_split = sum(
        a in matched and b in matched and matched[a] != matched[b] for a, b in field.touching_pairs
    )
    ious = score.ious
    return {
        "wbc_true": len(field.wbcs),
        "wbc_found": result.wbc_count,
        "missed": len(score.missed),
        "extra": len(score.extra),
        "min_iou": float(ious.min()) if len(ious) else 0.0,
        "iou_ge_08": float((ious >= 0.8).sum()) / max(1, len(field.wbcs)),
        "pairs": len(field.touching_pairs),
        "pairs_split": pairs_split,
        "rbc_err": (result.rbc_count - field.n_rbc) / field.n_rbc,
        "platelet_err": (result.platelet_count - field.n_platelets) / max(1, field.n_platelets),
        "cells_s": result.stage_seconds.get("cells", float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=10, help="synthetic fields to generate")
    parser.add_argument("--samples", action="store_true", help="use sample_slides/ instead")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or PATH.pt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.samples:
            paths = sorted((REPO_ROOT / "sample_slides").glob("synth_*.jpg"))
        else:
            paths = []
            for seed in range(args.fields):
                path = work / f"synth_{seed:03d}.jpg"
                write_field(generate_field(seed=seed), path)
                paths.append(path)
        batch = process_batch(paths, work / "out" / "report.xlsx", ProcessConfig(model=args.model))
        rows = []
        for result in batch.results:
            if result.status != "ok":
                print(f"{result.slide}: FAILED {result.error}")
                continue
            row = score_slide(result)
            rows.append(row)
            print(
                f"{result.slide:16s} WBC {row['wbc_found']:3d}/{row['wbc_true']:3d} "
                f"missed {row['missed']} extra {row['extra']} "
                f"min IoU {row['min_iou']:.3f} IoU>=0.8 {row['iou_ge_08']:.0%} "
                f"pairs split {row['pairs_split']}/{row['pairs']} "
                f"RBC err {row['rbc_err']:+.1%} platelet err {row['platelet_err']:+.1%} "
                f"cells {row['cells_s']:.2f} s"
            )
    if rows:
        exact = sum(r["wbc_found"] == r["wbc_true"] for r in rows)
        print(
            f"\n{len(rows)} fields: WBC count exact on {exact}; "
            f"WBCs with IoU >= 0.8: {np.mean([r['iou_ge_08'] for r in rows]):.1%}; "
            f"smallest IoU {min(r['min_iou'] for r in rows):.3f}; "
            f"pairs split {sum(r['pairs_split'] for r in rows)}/{sum(r['pairs'] for r in rows)}; "
            f"mean |RBC err| {np.mean([abs(r['rbc_err']) for r in rows]):.1%}; "
            f"mean |platelet err| {np.mean([abs(r['platelet_err']) for r in rows]):.1%}; "
            f"cell stage {np.mean([r['cells_s'] for r in rows]):.2f} s/field"
        )


if __name__ == "__main__":
    main()
