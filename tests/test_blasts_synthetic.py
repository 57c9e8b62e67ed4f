"""Blast detection on synthetic fields with planted blasts (exact truth).

Three 2592x1944 camera fields at 0.1 µm/px, each with the usual normal WBCs
plus 8 planted blasts (:mod:`smearscan.synth.blasts`: 10.8-17.5 µm, N:C by
area 0.84-0.91, round nucleus with fine chromatin and nucleoli, thin blue
rim), go through the whole product path (``process_batch``, classical
segmenter, pixel size estimated from the RBCs as in a real run). Every true
cell is matched to its ``Cells`` row through ``labels/cells`` (IoU >= 0.5), then:

* every planted blast is found as a WBC (a segmenter / generator check);
* blast recall (true blasts whose row has ``is_blast``) is at least 0.95;
* no lymphocyte of typical size (true equivalent diameter <= 10 µm) is called
  a blast.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import zarr

from smearscan.config import ProcessConfig
from smearscan.evaluation import match_instances
from smearscan.pipeline import process_batch
from smearscan.resample import array_reader
from smearscan.review import preview_arrays
from smearscan.synth import BLAST_TYPE, generate_field, load_truth, write_field

logger = logging.getLogger(__name__)

SEEDS = (100, 101, 102)
BLASTS_PER_FIELD = 8
#: Lymphocytes up to this true equivalent diameter (µm) must never be called blasts.
TYPICAL_LYMPHOCYTE_MAX_UM = 10.0
MIN_BLAST_RECALL = 0.95


@dataclass(frozen=True)
class Matched:
    """One true WBC and the ``Cells`` row matched to it (None when not found)."""

    slide: str
    truth_id: int
    cell_type: str
    diameter_um: float
    row: dict[str, Any] | None


@pytest.fixture(scope="module")
def matched(tmp_path_factory: pytest.TempPathFactory) -> list[Matched]:
    """Generate the fields, run ``process_batch`` and match truth cells to ``Cells`` rows."""
    tmp = tmp_path_factory.mktemp("blasts")
    paths = [
        write_field(generate_field(seed, blasts=BLASTS_PER_FIELD), tmp / f"blasts_{seed}.jpg")[0]
        for seed in SEEDS
    ]
    config = ProcessConfig(model="classical")
    config = dataclasses.replace(
        config, output=dataclasses.replace(config.output, write_previews=False)
    )
    batch = process_batch(paths, tmp / "report.xlsx", config)
    out: list[Matched] = []
    for result in batch.results:
        assert result.status == "ok", result.error
        field = load_truth(result.path)
        labels = zarr.open_group(result.mask_path, mode="r")["labels/cells/s0"]
        s = labels.shape[0] / result.height
        _, cells = preview_arrays(
            array_reader(field.image), labels, (result.height, result.width), s, 10**6
        )
        pred_of = {t: p for t, p, _ in match_instances(field.cells, cells, min_iou=0.5).matches}
        rows = {int(r["cell_id"]): r for r in result.cells}
        for w in field.wbcs:
            diameter = 2.0 * np.sqrt(w.area_px / np.pi) * field.pixel_size_um
            pred = pred_of.get(w.id)
            row = rows.get(int(pred)) if pred is not None else None
            out.append(Matched(result.slide, w.id, w.cell_type, float(diameter), row))
    return out


def test_every_blast_is_found_as_a_wbc(matched: list[Matched]) -> None:
    blasts = [m for m in matched if m.cell_type == BLAST_TYPE]
    assert len(blasts) == len(SEEDS) * BLASTS_PER_FIELD >= 20
    missed = [(m.slide, m.truth_id) for m in blasts if m.row is None]
    assert not missed, f"blasts not segmented as WBCs: {missed}"


def test_blast_recall(matched: list[Matched]) -> None:
    blasts = [m for m in matched if m.cell_type == BLAST_TYPE and m.row is not None]
    found = [m for m in blasts if bool(m.row and m.row["is_blast"])]
    recall = len(found) / len(blasts)
    logger.info("blast recall %d/%d = %.3f", len(found), len(blasts), recall)
    missed = [
        (m.slide, m.truth_id, m.row["cell_type"], m.row["blast_probability"])
        for m in blasts
        if m.row and not m.row["is_blast"]
    ]
    assert recall >= MIN_BLAST_RECALL, f"recall {recall:.3f}; missed: {missed}"


def test_no_typical_lymphocyte_called_blast(matched: list[Matched]) -> None:
    lymphocytes = [
        m
        for m in matched
        if m.cell_type == "lymphocyte"
        and m.diameter_um <= TYPICAL_LYMPHOCYTE_MAX_UM
        and m.row is not None
    ]
    assert lymphocytes, "the fields hold normal lymphocytes"
    called = [
        (m.slide, m.truth_id, round(m.diameter_um, 2))
        for m in lymphocytes
        if m.row and m.row["is_blast"]
    ]
    logger.info("lymphocytes called blast: %d/%d", len(called), len(lymphocytes))
    assert not called, f"normal lymphocytes called blasts: {called}"
