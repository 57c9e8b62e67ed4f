"""Dice of the instance masks ``labels/nuclei`` and ``labels/cells`` on wbc-seg.

Every image of ``wbc-seg/<set>/images`` is processed by the real batch path
(``process_batch``, ``--model`` or the default model, the set's pixel size given as with
``--pixel-size``). The slide's ``labels/cells`` and ``labels/nuclei`` are brought
back to the source grid (nearest) and compared with the expert mask: whole cell
(any label vs mask 128|255) and nucleus (any label vs mask 255). Unlike
``classical_dice.py``, which scores the semantic map, this scores what the
report's cells are made of: after the instance stage's debris filters, clump
splitting and cytoplasm reach.

Usage::

    .venv/bin/python benchmarks/cells_wbcseg.py [--data ../shared/data] [--limit N]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import zarr

from smearscan.config import DEFAULT_MODEL, ProcessConfig, ScaleConfig
from smearscan.evaluation import WBC_SEG_PIXEL_SIZE_UM, dice, snap_mask_levels
from smearscan.pipeline import process_batch
from smearscan.resample import labels_to_source

REPO_ROOT = Path(__file__).resolve().parents[1]


def score_set(
    folder: Path, pixel_size_um: float, limit: int | None, model: str
) -> list[tuple[float, float]]:
    """(nucleus Dice, cell Dice) per image of one wbc-seg set."""
    images = sorted((folder / "images").glob("*.png"))[:limit]
    config = ProcessConfig(model=model, scale=ScaleConfig(pixel_size_um=pixel_size_um))
    config = dataclasses.replace(
        config,
        output=dataclasses.replace(config.output, write_previews=False, write_probabilities=False),
    )
    scores = []
    with tempfile.TemporaryDirectory() as tmp:
        batch = process_batch(images, Path(tmp) / "report.xlsx", config)
        for path, result in zip(images, batch.results, strict=True):
            mask = snap_mask_levels(cv2.imread(str(folder / "masks" / path.name), 0))
            if result.status != "ok":
                scores.append((0.0, 0.0))
                continue
            group = zarr.open_group(result.mask_path, mode="r")
            cells, nuclei = (
                np.asarray(group[f"labels/{name}/s0"][:]) for name in ("cells", "nuclei")
            )
            s = cells.shape[0] / mask.shape[0]
            cells = labels_to_source(cells, s, *mask.shape)
            nuclei = labels_to_source(nuclei, s, *mask.shape)
            scores.append((dice(nuclei > 0, mask == 255), dice(cells > 0, mask >= 128)))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=None, help="images per set (default all)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or PATH.pt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for name, pixel_size in WBC_SEG_PIXEL_SIZE_UM.items():
        start = time.perf_counter()
        scores = score_set(args.data / "wbc-seg" / name, pixel_size, args.limit, args.model)
        nucleus = [n for n, _ in scores]
        cell = [c for _, c in scores]
        print(
            f"{name:12s} n={len(scores):4d} px={pixel_size:.3f} um  labels/nuclei Dice mean "
            f"{statistics.mean(nucleus):.3f} median {statistics.median(nucleus):.3f}  "
            f"labels/cells Dice mean {statistics.mean(cell):.3f} "
            f"median {statistics.median(cell):.3f}  ({time.perf_counter() - start:.0f} s)"
        )


if __name__ == "__main__":
    main()
