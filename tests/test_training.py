"""``smearscan train`` and the training loop on tiny drawn datasets (tests/annotated.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from smearscan.augment import AugmentConfig
from smearscan.checkpoint import load_checkpoint
from smearscan.cli import app
from smearscan.errors import ConfigError
from smearscan.train_config import TrainConfig
from smearscan.train_data import DataSource, load_samples
from smearscan.training import fit, holdout_split, train
from tests.annotated import PIXEL_SIZE_UM, write_mask_dataset, write_yolo_dataset

SMALL = {"width": 8, "depth": 2, "crop_px": 96, "batch_size": 4, "seed": 3}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_train_cli_overfits_a_tiny_set(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "drawn", n=10, seed=1)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data", f"{data}@{PIXEL_SIZE_UM}",
            "--out", str(out),
            "--width", "8",
            "--depth", "2",
            "--crop", "96",
            "--batch-size", "2",
            "--epochs", "10",
            "--lr", "0.01",
            "--val-fraction", "0.2",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(out / "history.csv")
    best = max(float(r["score"]) for r in rows)
    assert best > 0.9, rows[-1]
    assert {"epoch", "lr", "train_loss", "val_loss", "score", "seconds"} <= set(rows[0])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    loaded = load_checkpoint(out / "best.pt")  # sha256 sidecar checked
    assert loaded.spec.input_pixel_size_um == PIXEL_SIZE_UM
    assert loaded.metadata["config"]["width"] == 8
    assert loaded.metadata["data"] == [f"{data}@{PIXEL_SIZE_UM}"]
    assert "best epoch" in result.output


class _KilledError(Exception):
    """Stands for the process dying after an epoch's checkpoints were written."""


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "drawn", n=6, seed=2)
    samples = load_samples([DataSource(data, PIXEL_SIZE_UM)], PIXEL_SIZE_UM)
    train_part, val_part = holdout_split(samples, 0.3, seed=0)
    config = TrainConfig(epochs=4, **SMALL)  # the cosine schedule
    whole = fit(train_part, val_part, config, tmp_path / "whole")

    def die_after_two(row: dict[str, object]) -> None:
        if row["epoch"] == 2:
            raise _KilledError

    with pytest.raises(_KilledError):
        fit(train_part, val_part, config, tmp_path / "cut", on_epoch=die_after_two)
    resumed = fit(train_part, val_part, config, tmp_path / "cut", resume=tmp_path / "cut/last.pt")
    assert _same_weights(whole.last_path, resumed.last_path)
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in whole.history]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    assert len(_rows(tmp_path / "cut" / "history.csv")) == 4


def test_resume_with_more_epochs_on_the_plateau_schedule(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "drawn", n=6, seed=2)
    samples = load_samples([DataSource(data, PIXEL_SIZE_UM)], PIXEL_SIZE_UM)
    train_part, val_part = holdout_split(samples, 0.3, seed=0)
    straight = TrainConfig(epochs=4, schedule="plateau", **SMALL)
    whole = fit(train_part, val_part, straight, tmp_path / "whole")
    short = TrainConfig(epochs=2, schedule="plateau", **SMALL)
    first = fit(train_part, val_part, short, tmp_path / "cut")
    assert len(first.history) == 2
    resumed = fit(train_part, val_part, straight, tmp_path / "cut", resume=first.last_path)
    assert _same_weights(whole.last_path, resumed.last_path)
    # the cosine schedule is laid out over --epochs: it cannot grow on resume
    cosine = fit(train_part, val_part, TrainConfig(epochs=2, **SMALL), tmp_path / "cos")
    with pytest.raises(ConfigError, match="epochs"):
        fit(
            train_part,
            val_part,
            TrainConfig(epochs=3, **SMALL),
            tmp_path / "cos",
            resume=cosine.last_path,
        )


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    data = write_mask_dataset(tmp_path / "drawn", n=4, seed=2)
    samples = load_samples([DataSource(data, PIXEL_SIZE_UM)], PIXEL_SIZE_UM)
    train_part, val_part = holdout_split(samples, 0.3, seed=0)
    first = fit(train_part, val_part, TrainConfig(epochs=1, **SMALL), tmp_path / "a")
    other = TrainConfig(epochs=2, **{**SMALL, "width": 4})
    with pytest.raises(ConfigError, match="width"):
        fit(train_part, val_part, other, tmp_path / "a", resume=first.last_path)


def test_cross_validation_writes_each_fold_and_a_summary(tmp_path: Path) -> None:
    masks = write_mask_dataset(tmp_path / "masks", n=6, seed=4)
    boxes = write_yolo_dataset(tmp_path / "boxes", n=4, seed=5)
    samples = load_samples([DataSource(masks, PIXEL_SIZE_UM), DataSource(boxes)], PIXEL_SIZE_UM)
    config = TrainConfig(epochs=1, folds=2, augment=AugmentConfig.none(), **SMALL)
    results = train(samples, config, tmp_path / "cv")
    assert len(results) == 2
    for i in (1, 2):
        assert (tmp_path / "cv" / f"fold{i}" / "best.pt").is_file()
        meta = load_checkpoint(tmp_path / "cv" / f"fold{i}" / "best.pt").metadata
        assert meta["train_images"] + meta["val_images"] == 10
        assert meta["val_images"] == 5  # 3 of 6 masks + 2 of 4 box images
    summary = _rows(tmp_path / "cv" / "cv_summary.csv")
    assert [r["fold"] for r in summary] == ["1", "2", "mean"]
    dice = [float(r[f"{masks.parent.name}/masks:nucleus_dice"]) for r in summary[:2]]
    assert float(summary[2][f"{masks.parent.name}/masks:nucleus_dice"]) == pytest.approx(
        sum(dice) / 2
    )


def test_train_cli_reports_a_bad_dataset(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        app, ["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "no known layout" in result.output


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="multiple of 2\\*\\*depth"):
        TrainConfig(crop_px=100, depth=4)
    with pytest.raises(ConfigError, match="folds"):
        TrainConfig(folds=1)


def test_strong_repeat_draws_exact_masks_more_often(tmp_path: Path) -> None:
    from collections import Counter

    import numpy as np

    from smearscan.training import _epoch_batches

    masks = write_mask_dataset(tmp_path / "masks", n=3, seed=4)
    boxes = write_yolo_dataset(tmp_path / "boxes", n=3, seed=5)
    samples = load_samples([DataSource(masks, PIXEL_SIZE_UM), DataSource(boxes)], PIXEL_SIZE_UM)
    config = TrainConfig(strong_repeat=3, max_crops_per_sample=1, **SMALL)
    drawn = Counter(
        i for batch in _epoch_batches(samples, config, np.random.default_rng(0)) for i in batch
    )
    assert {drawn[i] for i, s in enumerate(samples) if s.strong} == {3}
    assert {drawn[i] for i, s in enumerate(samples) if not s.strong} == {1}
    with pytest.raises(ConfigError, match="strong repeat"):
        TrainConfig(strong_repeat=0)
