"""The pixel-size plausibility guard (:mod:`smearscan.plausibility`) on the real data sets.

Each field is processed with ``process_slide`` (default segmentation model,
``--classifier rules``: types do not change the evidence) at its source's
true pixel size and at wrong ones (x0.5, x2, x6.7 by default), as a lab meets
a wrong ``--pixel-size``, camera profile or estimate. For every source and
factor it prints: n, failed (any other stage), the share flagged implausible
(at x1 false alarms, elsewhere detections), the share flagged by each check
(median RBC diameter, WBC area, nucleus area; largest WBC or nucleus), the
medians over the fields of the evidence (median RBC diameter, RBC and WBC
counts, median WBC and nucleus area, largest WBC), and "est off": the share
of fields whose own RBC-based estimate (scale.py, on the source pixels) is
more than 1.8x off the pixel size processed at. The pipeline does not check a
pixel size given with ``--pixel-size``, so the evidence is judged here with
:func:`~smearscan.plausibility.scale_problem` (from the stored class map).

Sources and their true pixel sizes: txl-pbc ``val`` (BCCD, BCD, PBC, Raabin,
told apart by image size; each source's pixel size from the ``train`` RBC
boxes, as in ``cells_txlpbc.py``), wbc-seg ``jiangxi`` @0.15 and
``cellavision`` @0.10, ``pbc-cells`` @0.10 (``--limit`` per class), and
``chula-rbc`` (pixel size not given: the median of
:func:`smearscan.scale.estimate_pixel_size` over its sampled fields).

Usage::

    .venv/bin/python benchmarks/scale_guard.py [--data ../shared/data] [--limit 20]
        [--factors 1 0.5 2 6.7] [--sources txl-pbc jiangxi ...] [--workers 1]
        [--csv rows.csv]
    .venv/bin/python benchmarks/scale_guard.py --from-csv rows.csv   # re-judge, no processing
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import math
import multiprocessing
import statistics
import sys
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.cells_txlpbc import SOURCES, box_pixel_sizes  # noqa: E402
from smearscan.config import (  # noqa: E402
    DEFAULT_MODEL,
    ClassifyConfig,
    OutputConfig,
    ProcessConfig,
    ScaleConfig,
)
from smearscan.errors import ProcessingError, ScaleEstimationError  # noqa: E402
from smearscan.instances import find_instances  # noqa: E402
from smearscan.ngff import full_resolution  # noqa: E402
from smearscan.pipeline import process_slide  # noqa: E402
from smearscan.plausibility import (  # noqa: E402
    ImplausibleScaleError,
    ScaleEvidence,
    evidence_from_result,
    scale_problem,
)
from smearscan.scale import estimate_pixel_size  # noqa: E402

ALL_SOURCES = ("txl-pbc", "jiangxi", "cellavision", "pbc-cells", "chula-rbc")
Job = tuple[str, str, float, float]  # source, path, true pixel size, factor


def _txl_jobs(data: Path, limit: int) -> list[tuple[str, Path, float]]:
    sizes = box_pixel_sizes(data / "txl-pbc" / "train")
    per_source: dict[str, list[Path]] = {}
    for path in sorted((data / "txl-pbc" / "val" / "images").glob("*.jpg")):
        with Image.open(path) as im:
            source = SOURCES.get(im.size, "PBC")
        per_source.setdefault(source, []).append(path)
    return [
        (f"txl-{s}", p, sizes[s]) for s, paths in sorted(per_source.items()) for p in paths[:limit]
    ]


def _chula_pixel_size(paths: list[Path]) -> float:
    """Median over the fields of the RBC-based pixel-size estimate, µm/px."""
    estimates = []
    for path in paths:
        try:
            estimates.append(estimate_pixel_size(np.asarray(Image.open(path).convert("RGB"))))
        except ScaleEstimationError:
            continue
    return float(statistics.median(e.pixel_size_um for e in estimates))


def fields_of(data: Path, sources: list[str], limit: int) -> list[tuple[str, Path, float]]:
    """``(source, path, true µm/px)`` of the sampled fields (``limit`` per source or class)."""
    out: list[tuple[str, Path, float]] = []
    if "txl-pbc" in sources:
        out += _txl_jobs(data, limit)
    for name, px in (("jiangxi", 0.15), ("cellavision", 0.10)):
        if name in sources:
            paths = sorted((data / "wbc-seg" / name / "images").glob("*.png"))[:limit]
            out += [(name, p, px) for p in paths]
    if "pbc-cells" in sources:
        for folder in sorted(p for p in (data / "pbc-cells").iterdir() if p.is_dir()):
            out += [("pbc-cells", p, 0.10) for p in sorted(folder.glob("*.jpg"))[:limit]]
    if "chula-rbc" in sources:
        paths = sorted((data / "chula-rbc" / "images").glob("*.jpg"), key=lambda p: int(p.stem))
        paths = paths[:limit]
        px = _chula_pixel_size(paths)
        print(f"chula-rbc: pixel size {px:.4f} µm/px (median RBC-based estimate)")
        out += [("chula-rbc", p, px) for p in paths]
    return out


def rbc_diameter_um(result: Any) -> float | None:
    """Median RBC diameter (µm) of a processed slide, from its stored class map."""
    classes = full_resolution(zarr.open_group(result.mask_path, mode="r"), "labels/classes")
    height, width = classes.shape
    found = find_instances(
        lambda w: np.asarray(classes[w.y0 : w.y1, w.x0 : w.x1]),
        height,
        width,
        result.model_pixel_size_um,
    )
    if math.isnan(found.rbc_diameter_px):
        return None
    return float(found.rbc_diameter_px * result.model_pixel_size_um)


def run_job(job: Job) -> dict[str, Any]:
    """Process one field at one factor: its evidence, the guard's verdict, or the failure."""
    source, path, true_px, factor = job
    row: dict[str, Any] = {"source": source, "image": Path(path).name, "factor": factor}
    config = ProcessConfig(
        model=MODEL,
        scale=ScaleConfig(pixel_size_um=true_px * factor),
        classify=ClassifyConfig(classifier="rules"),
        output=OutputConfig(write_probabilities=False, write_image=False, write_previews=False),
    )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = process_slide(Path(path), config, Path(tmp) / "m.zarr")
            evidence = evidence_from_result(result, rbc_diameter_um(result))
        except ProcessingError as exc:
            if not isinstance(exc.__cause__, ImplausibleScaleError):  # guard wired in
                return {**row, "status": f"failed at {exc.stage}: {exc.message[:80]}"}
            evidence = exc.__cause__.evidence
    return {**row, "status": "ok", **asdict(evidence), "estimate_um": _estimate(Path(path))}


def _estimate(path: Path) -> float | None:
    """The RBC-based pixel-size estimate of the field (µm/px; independent of the factor)."""
    try:
        return estimate_pixel_size(np.asarray(Image.open(path).convert("RGB"))).pixel_size_um
    except ScaleEstimationError:
        return None


def _evidence(row: dict[str, Any]) -> ScaleEvidence:
    """The evidence of a row (also of a row read back from the CSV, all text)."""
    values: dict[str, Any] = {}
    for f in fields(ScaleEvidence):
        value = row.get(f.name)
        if f.name == "pixel_size_method" or f.name not in row:
            continue  # "" by default; a column an older CSV lacks keeps its default
        if value in (None, "", "None"):
            values[f.name] = None
        else:
            values[f.name] = int(float(value)) if f.name.endswith("_count") else float(value)
    return ScaleEvidence(**values)


def _med(values: list[float | None]) -> str:
    finite = [v for v in values if v is not None]
    return f"{statistics.median(finite):.1f}" if finite else "-"


#: Columns "by ...": the share of fields with this phrase in the guard's message.
CHECKS = (
    ("RBCmed", "median red cell"),
    ("WBCmed", "median white cell"),
    ("NUCmed", "median nucleus"),
    ("largest", "the largest"),
)
#: Column "est off": the share of fields whose own RBC-based estimate (source
#: pixels, independent of the factor) is this many times off the processed size.
ESTIMATE_OFF = 1.8


def _estimate_off(row: dict[str, Any]) -> bool:
    estimate = row.get("estimate_um")
    if estimate in (None, "", "None"):
        return False
    ratio = float(row["pixel_size_um"]) / float(estimate)
    return not 1 / ESTIMATE_OFF <= ratio <= ESTIMATE_OFF


def summarise(rows: list[dict[str, Any]]) -> None:
    """Print one line per source and factor (see the module docstring)."""
    print(
        f"{'source':<12}{'factor':>7}{'n':>4}{'fail':>5}{'flagged':>8}"
        + "".join(f"{name:>8}" for name, _ in CHECKS)
        + f"{'RBC µm':>8}{'RBC n':>6}{'WBC n':>6}{'WBC µm²':>8}{'nuc µm²':>8}{'maxWBC':>8}"
        + f"{'est off':>8}"
    )
    keys = sorted({(str(r["source"]), float(r["factor"])) for r in rows})
    for source, factor in keys:
        sel = [r for r in rows if r["source"] == source and float(r["factor"]) == factor]
        good = [r for r in sel if r["status"] == "ok"]
        ok = [_evidence(r) for r in good]
        problems = [scale_problem(e) or "" for e in ok]
        n = max(1, len(ok))
        shares = [sum(bool(p) for p in problems) / n] + [
            sum(phrase in p for p in problems) / n for _, phrase in CHECKS
        ]
        print(
            f"{source:<12}{factor:>7g}{len(sel):>4}{len(sel) - len(ok):>5}{shares[0]:>8.0%}"
            + "".join(f"{s:>8.0%}" for s in shares[1:])
            + f"{_med([e.rbc_diameter_um for e in ok if e.rbc_count]):>8}"
            + f"{_med([float(e.rbc_count) for e in ok]):>6}"
            + f"{_med([float(e.wbc_count) for e in ok]):>6}"
            + f"{_med([e.wbc_area_um2 for e in ok]):>8}{_med([e.nucleus_area_um2 for e in ok]):>8}"
            + f"{_med([e.largest_wbc_area_um2 for e in ok]):>8}"
            + f"{sum(_estimate_off(r) for r in good) / n:>8.0%}"
        )


MODEL = DEFAULT_MODEL


def _init_worker(model: str) -> None:
    global MODEL
    MODEL = model
    logging.basicConfig(level=logging.ERROR)
    import torch

    torch.set_num_threads(1)


def main() -> None:
    """Parse the arguments, run (or read back) the rows, print the table, write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--sources", nargs="+", default=list(ALL_SOURCES), choices=ALL_SOURCES)
    parser.add_argument("--limit", type=int, default=20, help="fields per source (pbc: per class)")
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 0.5, 2.0, 6.7])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--workers", type=int, default=1, choices=[1, 2])
    parser.add_argument("--csv", type=Path, help="write the per-field rows here")
    parser.add_argument("--from-csv", type=Path, help="judge the rows of an earlier --csv")
    args = parser.parse_args()
    if args.from_csv:
        with args.from_csv.open(newline="") as fh:
            summarise(list(csv.DictReader(fh)))
        return
    jobs: list[Job] = [
        (source, str(path), px, factor)
        for source, path, px in fields_of(args.data, args.sources, args.limit)
        for factor in args.factors
    ]
    print(f"{len(jobs)} runs")
    names = ["source", "image", "factor", "status", *(f.name for f in fields(ScaleEvidence))]
    rows = []
    with contextlib.ExitStack() as stack:
        writer = None
        if args.csv:  # row by row, so that a long run's rows survive a failure after it
            fh = stack.enter_context(args.csv.open("w", newline=""))
            writer = csv.DictWriter(fh, fieldnames=[*names, "estimate_um"])
            writer.writeheader()
        pool = stack.enter_context(
            multiprocessing.get_context("spawn").Pool(args.workers, _init_worker, (args.model,))
        )
        for row in pool.imap(run_job, jobs, chunksize=1):
            rows.append(row)
            if writer is not None:
                writer.writerow(row)
                fh.flush()
    summarise(rows)


if __name__ == "__main__":
    main()
