"""``smearscan evaluate``: matching rules, known-answer scores and the CLI on a real run."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from smearscan.cli import app
from smearscan.datasets import Box, Point
from smearscan.scoring import (
    RunSlide,
    match_points_in_boxes,
    match_points_to_points,
    match_slide,
    read_run,
    score_images,
    summarise,
)
from smearscan.train_data import DatasetError, list_annotated
from smearscan.zarr_store import create_instance_labels, create_slide_store, publish_slide_store
from tests.annotated import PIXEL_SIZE_UM, write_mask_dataset, write_yolo_dataset


def test_points_in_boxes_match_one_to_one() -> None:
    boxes = [Box(0, 0, 10, 10, "wbc"), Box(5, 5, 15, 15, "wbc")]
    # both points lie in both boxes: each box takes one
    assert match_points_in_boxes(np.array([[6.0, 6.0], [9.0, 9.0]]), boxes) == 2
    # one point cannot match two boxes
    assert match_points_in_boxes(np.array([[7.0, 7.0]]), boxes) == 1
    assert match_points_in_boxes(np.array([[50.0, 50.0]]), boxes) == 0
    assert match_points_in_boxes(np.zeros((0, 2)), boxes) == 0


def test_points_match_within_a_radius() -> None:
    truth = [Point(10, 10, "blast"), Point(40, 10, "blast")]
    pred = np.array([[12.0, 10.0], [13.0, 10.0], [60.0, 10.0]])
    assert match_points_to_points(pred, truth, radius_px=5) == 1
    assert match_points_to_points(pred, truth, radius_px=30) == 2


def test_two_slides_of_one_name_are_refused(tmp_path: Path) -> None:
    masks = write_mask_dataset(tmp_path / "masks", 1)
    boxes = write_yolo_dataset(tmp_path / "boxes", 1)
    report = tmp_path / "run" / "report.xlsx"
    result = CliRunner().invoke(
        app,
        ["process", str(masks / "images"), str(boxes / "images"), "--out", str(report),
         "--pixel-size", str(PIXEL_SIZE_UM), "--model", "classical", "--no-previews",
         "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with pytest.raises(DatasetError, match=r"2 slides are named '000\.png'"):
        read_run(report)


def test_slide_matching_prefers_the_longest_path_suffix() -> None:
    slides = [
        RunSlide(s, "", "ok", None, np.zeros((0, 2)), 0, 0, 0.25)
        for s in ("a/001.png", "b/001.png")
    ]
    assert match_slide(Path("/data/b/001.png"), slides) is slides[1]
    assert match_slide(Path("/data/c/002.png"), slides) is None


def _run_slide(tmp_path: Path, name: str, cells: np.ndarray, nuclei: np.ndarray) -> RunSlide:
    height, width = cells.shape
    store = create_slide_store(
        tmp_path / "run.zarr", name, height=height, width=width, pixel_size_um=PIXEL_SIZE_UM
    )
    for label, data in (("cells", cells), ("nuclei", nuclei)):
        create_instance_labels(store, label, PIXEL_SIZE_UM)[:] = data.astype(np.int32)
    publish_slide_store(store)
    return RunSlide(name, "", "ok", store.path, np.zeros((0, 2)), 0, 0, PIXEL_SIZE_UM)


def test_mask_scores_have_known_values(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "m", 2)
    items = list_annotated(data)
    masks = [cv2.imread(str(i.annotation), cv2.IMREAD_GRAYSCALE) for i in items]
    exact = _run_slide(tmp_path, "000.png", masks[0] >= 128, masks[0] == 255)
    # second image: nucleus predicted as a half-size mask (labels at half resolution)
    half = cv2.resize((masks[1] == 255).astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST)
    shifted = np.roll(masks[1] >= 128, 8, axis=1)
    other = _run_slide(
        tmp_path,
        "001.png",
        cv2.resize(shifted.astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST),
        half,
    )
    rows = score_images(items, [exact, other], "drawn")
    assert rows[0]["nucleus_dice"] == 1.0 and rows[0]["cell_dice"] == 1.0
    assert 0.9 < rows[1]["nucleus_dice"] < 1.0
    area = (masks[1] >= 128).sum()
    overlap = ((masks[1] >= 128) & shifted).sum()
    assert rows[1]["cell_dice"] == pytest.approx(2 * overlap / (2 * area), abs=0.03)
    overall = summarise(rows)[0]
    assert overall["nucleus_dice"] == pytest.approx((1 + rows[1]["nucleus_dice"]) / 2)


def test_annotated_cell_dice_leaves_out_unlabelled_neighbours(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "m", 1)
    items = list_annotated(data)
    mask = cv2.imread(str(items[0].annotation), cv2.IMREAD_GRAYSCALE)
    cells = (mask >= 128).astype(np.int32)
    nuclei = (mask == 255).astype(np.int32)
    free = np.argwhere(cv2.dilate((mask >= 128).astype(np.uint8), np.ones((9, 9))) == 0)
    y, x = free[len(free) // 2]
    cells[y - 2 : y + 3, x - 2 : x + 3] = 2  # a neighbour the expert left unlabelled
    nuclei[y - 1 : y + 2, x - 1 : x + 2] = 2
    row = score_images(items, [_run_slide(tmp_path, "000.png", cells, nuclei)], "drawn")[0]
    assert row["annotated_cell_dice"] == 1.0 and row["annotated_nucleus_dice"] == 1.0
    assert row["cell_dice"] < 1.0 and row["nucleus_dice"] < 1.0


def test_failed_slides_count_as_misses(tmp_path: Path) -> None:
    data = write_yolo_dataset(tmp_path / "y", 2)
    items = list_annotated(data)
    boxes = (data / "labels" / "000.txt").read_text().splitlines()
    wbc = next(line for line in boxes if line.startswith("0 ")).split()
    centre = np.array([[float(wbc[1]) * 128, float(wbc[2]) * 128], [5.0, 5.0]])
    found = RunSlide("000.png", "", "ok", None, centre, 3, 0, PIXEL_SIZE_UM)
    failed = RunSlide("001.png", "", "failed", None, np.zeros((0, 2)), 0, 0, PIXEL_SIZE_UM)
    rows = score_images(items, [found, failed], "drawn")
    assert rows[0]["wbc_matched"] == 1 and rows[0]["wbc_pred"] == 2
    assert rows[0]["rbc_true"] == 3 and rows[0]["rbc_pred"] == 3
    assert rows[1]["status"] == "failed" and rows[1]["wbc_matched"] == 0
    overall = summarise(rows)[0]
    assert overall["wbc_recall"] == pytest.approx(1 / 2)
    assert overall["wbc_precision"] == pytest.approx(1 / 2)
    assert overall["rbc_count_error"] == 0.0


def test_evaluate_cli_scores_a_model_and_an_earlier_run_alike(tmp_path: Path) -> None:
    masks = write_mask_dataset(tmp_path / "masks", 3, seed=7)
    boxes = write_yolo_dataset(tmp_path / "boxes", 3, seed=8)
    runner = CliRunner()
    report = tmp_path / "run" / "report.xlsx"
    result = runner.invoke(
        app,
        ["process", str(tmp_path), "--glob", "*/images/*.png", "--out", str(report),
         "--pixel-size", str(PIXEL_SIZE_UM), "--model", "classical", "--no-previews",
         "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = [f"{masks}@{PIXEL_SIZE_UM}", f"{boxes}@{PIXEL_SIZE_UM}"]
    args = [a for d in data for a in ("--data", d)]
    earlier = runner.invoke(
        app, ["evaluate", *args, "--run", str(report), "-o", str(tmp_path / "a.xlsx")]
    )
    assert earlier.exit_code == 0, earlier.output
    fresh = runner.invoke(
        app, ["evaluate", *args, "--model", "classical", "-o", str(tmp_path / "b.csv")]
    )
    assert fresh.exit_code == 0, fresh.output
    a = pd.read_excel(tmp_path / "a.xlsx", sheet_name="PerImage")
    b = pd.read_csv(tmp_path / "b.csv")
    assert len(a) == 6
    pd.testing.assert_frame_equal(
        a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False
    )
    overall = pd.read_csv(tmp_path / "b_overall.csv")
    assert len(overall) == 3 and overall["source"].iloc[-1] == "all"
    assert {"nucleus_dice", "cell_dice", "wbc_f1", "rbc_count_error"} <= set(overall.columns)


def test_evaluate_cli_needs_a_model_or_a_run(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "m", 1)
    result = CliRunner().invoke(
        app, ["evaluate", "--data", str(data), "-o", str(tmp_path / "x.csv")]
    )
    assert result.exit_code == 2
    assert "either a model" in result.output
