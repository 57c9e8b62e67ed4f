"""``smearscan train --task classify`` trains a classifier that ``process --classifier`` uses.

A small crop folder (one folder per class, the pbc-cells layout) is cut from
synthetic fields around their true lymphocytes and neutrophils; the real CLI
harvests the cells (the classical segmenter finds and measures them), trains
a tiny CellNet, and a ``process`` run with ``--classifier`` types the cells of
a new field with it: only the classifier's two types (or blast) appear, and the
Run sheet names the classifier and its sha256.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from typer.testing import CliRunner

from smearscan.checkpoint import read_sidecar
from smearscan.cli import app
from smearscan.resample import read_window
from smearscan.synth import generate_field, write_field
from smearscan.tiling import Window

runner = CliRunner()
CLASSES = ("lymphocyte", "neutrophil")
CROP = 300  # px at 0.1 µm/px: 30 µm, like a PBC crop


def _crop_folder(root: Path) -> Path:
    counts = dict.fromkeys(CLASSES, 0)
    for seed in range(40, 52):
        field = generate_field(seed, 1000, 800, n_wbc=6, n_touching_pairs=0)
        for wbc in field.wbcs:
            if wbc.cell_type not in CLASSES or wbc.touches_edge or counts[wbc.cell_type] >= 12:
                continue
            x, y = round(wbc.centroid_x), round(wbc.centroid_y)
            crop = read_window(
                field.image, Window(y - CROP // 2, y + CROP // 2, x - CROP // 2, x + CROP // 2)
            )
            folder = root / wbc.cell_type
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{wbc.cell_type[:2].upper()}_{seed}_{wbc.id}.png"
            cv2.imwrite(str(folder / name), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            counts[wbc.cell_type] += 1
    assert min(counts.values()) >= 8, counts
    return root


def test_train_classify_then_process_with_the_classifier(tmp_path: Path):
    crops = _crop_folder(tmp_path / "crops")
    out = tmp_path / "cls"
    result = runner.invoke(
        app,
        [
            "train", "--task", "classify", "--data", f"{crops}@0.1", "--out", str(out),
            "--model", "classical", "--epochs", "3", "--width", "4", "--batch-size", "8",
            "--device", "cpu", "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    classifier = out / "classifier.pt"
    assert classifier.is_file() and (out / "confusion_test.csv").is_file()
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 3 and np.isfinite(history["train_loss"]).all()

    field = write_field(generate_field(7, 1200, 900), tmp_path / "slides" / "field.png")[0]
    report = tmp_path / "run" / "report.xlsx"
    result = runner.invoke(
        app,
        [
            "process", str(field), "--out", str(report), "--model", "classical",
            "--classifier", str(classifier), "--pixel-size", "0.1", "--no-previews", "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sheets = pd.read_excel(report, sheet_name=None)
    cells = sheets["Cells"]
    assert len(cells) > 0
    assert set(cells["cell_type"]) <= {*CLASSES, "blast"}, set(cells["cell_type"])
    assert cells["type_confidence"].between(0, 1).all()
    run = dict(zip(sheets["Run"]["key"], sheets["Run"]["value"], strict=True))
    assert run["classifier"] == str(classifier)
    assert run["classifier_sha256"] == read_sidecar(classifier)


def test_process_with_a_missing_classifier_is_a_usage_error(tmp_path: Path):
    field = write_field(generate_field(3, 600, 500), tmp_path / "slides" / "field.png")[0]
    report = tmp_path / "run" / "report.xlsx"
    result = runner.invoke(
        app,
        [
            "process", str(field), "--out", str(report), "--model", "classical",
            "--classifier", str(tmp_path / "nope.pt"), "--pixel-size", "0.1", "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 2, result.output  # found before any slide runs
    assert "nope.pt" in result.output and not report.parent.exists()
