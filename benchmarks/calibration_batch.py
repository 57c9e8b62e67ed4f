"""Pixel sizes the way a new lab meets them: ``smearscan process`` with no ``--pixel-size``.

Issue #14's acceptance, measured through the CLI with the default model and
settings (no config, no ``--pixel-size``):

* ``txl`` — ``txl-pbc/val`` as one batch: fields failed at ``scale``; per
  source (told apart by image size) the pooled pixel size against the median
  of that source's own per-field estimates (:func:`estimate_pixel_size`); WBC
  detection P/R/F1 against the boxes, and the same for a second run that gives
  each source one pixel size (that median) with ``--pixel-size``.
* ``wbcseg`` — the wbc-seg crops (jiangxi 0.15, cellavision 0.10 µm/px) as one
  batch: per set, slides ok with a pixel size more than 15 % from the truth
  (must be none), ok within it, failed at ``scale`` (with the guard's message).

Usage::

    .venv/bin/python benchmarks/calibration_batch.py txl [--data ../shared/data] [--limit N]
    .venv/bin/python benchmarks/calibration_batch.py wbcseg [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from smearscan.datasets import image_size, read_yolo_boxes  # noqa: E402
from smearscan.errors import ScaleEstimationError  # noqa: E402
from smearscan.scale import estimate_pixel_size  # noqa: E402
from smearscan.scoring import match_points_in_boxes  # noqa: E402

SOURCES = {(640, 480): "BCCD", (416, 416): "BCD", (575, 575): "Raabin"}
TRUTH_UM = {"jiangxi": 0.15, "cellavision": 0.10}


def _process(inputs: list[Path], report: Path, *extra: str) -> None:
    """``smearscan process`` as a lab runs it (the exit code is read from the report)."""
    args = [sys.executable, "-m", "smearscan", "process", *map(str, inputs)]
    args += ["--out", str(report), "--no-previews", "--quiet", "--no-ledger", *extra]
    subprocess.run(args, check=False, timeout=7200)


def _sheets(report: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    summary = pd.read_excel(report, sheet_name="Summary")
    cells = pd.read_parquet(report.with_name(report.stem + "_cells.parquet"))
    return summary, cells


def _own_estimate(path: Path) -> float:
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    try:
        return estimate_pixel_size(rgb).pixel_size_um
    except ScaleEstimationError:
        return float("nan")


def _detection(summary: pd.DataFrame, cells: pd.DataFrame, labels: Path) -> dict[str, dict]:
    """WBC matches per source: true boxes, predicted cells, matched."""
    out: dict[str, dict] = defaultdict(lambda: {"true": 0, "pred": 0, "hit": 0, "failed": 0})
    by_slide = {s: g for s, g in cells.groupby("slide")} if len(cells) else {}
    for row in summary.itertuples():
        w, h = int(row.width), int(row.height)
        source = SOURCES.get((w, h), "PBC")
        boxes = read_yolo_boxes(labels / f"{Path(row.slide).stem}.txt", w, h)
        wbc = [b for b in boxes if b.label == "wbc"]
        counts = out[source]
        counts["true"] += len(wbc)
        if row.status != "ok":
            counts["failed"] += 1
            continue
        found = by_slide.get(row.slide)
        points = (
            found[["centroid_x", "centroid_y"]].to_numpy(float)
            if found is not None
            else np.zeros((0, 2))
        )
        counts["pred"] += len(points)
        counts["hit"] += match_points_in_boxes(points, wbc)
    return out


def _prf(c: dict) -> str:
    r, p = c["hit"] / max(1, c["true"]), c["hit"] / max(1, c["pred"])
    return f"P {p:.3f} R {r:.3f} F1 {2 * p * r / max(1e-9, p + r):.3f} (failed {c['failed']})"


def txl(data: Path, limit: int | None, work: Path, given: bool = True) -> None:
    """The txl-pbc/val acceptance (see the module)."""
    images = sorted((data / "txl-pbc" / "val" / "images").glob("*.jpg"))[:limit]
    folder = work / "images"
    folder.mkdir()
    for path in images:
        (folder / path.name).symlink_to(path)
    _process([folder], work / "pooled.xlsx")
    summary, cells = _sheets(work / "pooled.xlsx")
    own: dict[str, list[float]] = defaultdict(list)
    for path in images:
        own[SOURCES.get(image_size(path), "PBC")].append(_own_estimate(path))
    summary["source"] = [SOURCES.get((int(w), int(h)), "PBC") for w, h in
                         zip(summary.width, summary.height, strict=True)]  # fmt: skip
    medians = {s: float(np.nanmedian(v)) for s, v in own.items()}
    print("source  fields failed@scale  pooled um/px  median own  diff   method")
    for source, group in summary.groupby("source"):
        pooled = statistics.median(group.pixel_size_um.dropna())
        at_scale = int((group.status != "ok").sum())
        method = group.pixel_size_method.mode().iat[0][:60]
        diff = pooled / medians[source] - 1
        print(f"{source:7s} {len(group):6d} {at_scale:6d} {pooled:12.4f} {medians[source]:11.4f}"
              f" {diff:+.1%}  {method}")  # fmt: skip
    pooled_det = _detection(summary, cells, data / "txl-pbc" / "val" / "labels")
    given_det: dict[str, dict] = {}
    for source, size in sorted(medians.items() if given else ()):
        sub = work / f"given_{source}"
        sub.mkdir()
        for path in images:
            if SOURCES.get(image_size(path), "PBC") == source:
                (sub / path.name).symlink_to(path)
        report = work / f"given_{source}.xlsx"
        _process([sub], report, "--pixel-size", f"{size:.5f}")
        given_det |= _detection(*_sheets(report), data / "txl-pbc" / "val" / "labels")
    for source in sorted(medians):
        other = _prf(given_det[source]) if given else "-"
        print(f"{source:7s} pooled: {_prf(pooled_det[source])}   given: {other}")
    total = {k: sum(d[k] for d in pooled_det.values()) for k in ("true", "pred", "hit", "failed")}
    given = {k: sum(d[k] for d in given_det.values()) for k in ("true", "pred", "hit", "failed")}
    print(f"all     pooled: {_prf(total)}   given: {_prf(given)}")


def wbcseg(data: Path, limit: int | None, work: Path) -> None:
    """The wbc-seg acceptance (see the module)."""
    folders = [data / "wbc-seg" / name / "images" for name in TRUTH_UM]
    inputs = []
    for folder in folders:
        link = work / folder.parent.name
        link.mkdir()
        for path in sorted(folder.glob("*.png"))[:limit]:
            (link / path.name).symlink_to(path)
        inputs.append(link)
    _process(inputs, work / "wbcseg.xlsx")
    summary = pd.read_excel(work / "wbcseg.xlsx", sheet_name="Summary")
    errors = pd.read_excel(work / "wbcseg.xlsx", sheet_name="Errors")
    for name, truth in TRUTH_UM.items():
        rows = summary[summary.source_path.str.contains(f"/{name}/")]
        ok = rows[rows.status == "ok"]
        off = (ok.pixel_size_um / truth - 1).abs()
        print(
            f"{name:12s} n={len(rows)} ok within 15 %: {int((off <= 0.15).sum())}  "
            f"ok beyond 15 % (must be 0): {int((off > 0.15).sum())}  "
            f"failed: {int((rows.status != 'ok').sum())}  median ok um/px "
            f"{ok.pixel_size_um.median() if len(ok) else float('nan'):.4f}"
        )
    if len(errors):
        print("a failure:", errors.iloc[0].to_dict())
        print(errors.iloc[:, 1].value_counts().to_string())


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", choices=["txl", "wbcseg"])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-given", action="store_true", help="txl: skip the given-size runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.which == "txl":
            txl(args.data, args.limit, Path(tmp), given=not args.no_given)
        else:
            wbcseg(args.data, args.limit, Path(tmp))


if __name__ == "__main__":
    main()
