"""Training of the cell classifier (``smearscan train --task classify``).

The labelled cells (:class:`~smearscan.classifier_data.CellSet`) are split,
stratified by dataset and class and seeded, into a held-out **test** share (scored once, at
the end, never used to choose anything), a **validation** share (early
stopping, best epoch, temperature) and the training rest. Each epoch draws as
many training cells as there are, class-balanced (every class equally likely,
cells drawn with replacement), augments them (flips, 90° and small rotations,
scale, stain/brightness/contrast/hue jitter, blur, noise: :mod:`smearscan.augment`)
and fits :class:`~smearscan.models.cellnet.CellNet` with AdamW, cross-entropy
with label smoothing and a cosine learning-rate decay. The epoch with the best
validation accuracy is kept; then the softmax temperature that minimises the
validation negative log-likelihood is fitted (calibrated probabilities) and
stored in the classifier file.

Outputs in ``OUT/``: ``classifier.pt`` (+ ``.sha256``), ``history.csv``
(one row per epoch), ``confusion_test.csv`` and ``confusion_val.csv`` (rows
true report type, columns predicted), ``metrics.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from smearscan.augment import AugmentConfig, augment
from smearscan.cell_crops import FEATURES, NORMALISATIONS, feature_matrix, normalise_crops
from smearscan.cell_types import CELL_TYPES, report_type
from smearscan.classifier_data import CellSet
from smearscan.classify import ClassifierSpec, save_classifier
from smearscan.errors import ConfigError
from smearscan.inference import choose_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Settings of one classifier training run.

    Attributes:
        epochs: Epochs (the cosine decay spans them).
        batch_size: Cells per step.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        width: Channels of the first conv stage.
        levels: Conv stages.
        features: Morphometry columns fed to the feature head (empty: image only).
        test_fraction: Share of each class held out for the final test.
        val_fraction: Share of each class (of what remains) for validation.
        patience: Stop after this many epochs without a better validation accuracy.
        label_smoothing: Cross-entropy label smoothing.
        seed: Seed of the split, the sampling, the augmentation and the weights.
        device: ``auto``, ``cpu`` or ``cuda``.
        normalisation: Crop normalisation (:data:`~smearscan.cell_crops.NORMALISATIONS`).
        augment: Ranges of the random augmentations.
    """

    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 16
    levels: int = 4
    features: tuple[str, ...] = tuple(FEATURES)
    test_fraction: float = 0.3
    val_fraction: float = 0.15
    patience: int = 12
    label_smoothing: float = 0.05
    seed: int = 0
    device: str = "auto"
    normalisation: str = "scale"
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(max_rotation_deg=20.0))

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs, batch size and learning rate must be positive")
        if not 0 <= self.test_fraction < 1 or not 0 < self.val_fraction < 1:
            raise ConfigError("test fraction must be in [0, 1) and val fraction in (0, 1)")
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(
                f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"
            )
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ConfigError(f"unknown features {sorted(unknown)}; known: {list(FEATURES)}")


@dataclass
class ClassifierResult:
    """What a training run produced."""

    path: Path
    spec: ClassifierSpec
    history: list[dict[str, float]]
    best_epoch: int
    metrics: dict[str, float]
    confusion_test: pd.DataFrame | None


def split_stratified(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(rest, held_out)``: ``round(fraction · n_c)`` of each class held out."""
    held: list[int] = []
    for label in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == label)
        rng.shuffle(idx)
        held.extend(idx[: round(fraction * len(idx))].tolist())
    mask = np.zeros(len(labels), bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def three_way_split(
    labels: np.ndarray, test_fraction: float, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``(train, val, test)``, stratified by label: ``test_fraction`` of each
    label held out first, then ``val_fraction`` of the rest. A fresh
    ``default_rng(seed)`` and the same labels in the same order give the same split."""
    rest, test = split_stratified(labels, test_fraction, rng)
    train, val = split_stratified(labels[rest], val_fraction, rng)
    return rest[train], rest[val], test


class _Batches:
    """Class-balanced, augmented training batches of a CellSet."""

    def __init__(self, cells: CellSet, targets: np.ndarray, config: ClassifierTrainConfig):
        self.cells, self.targets, self.config = cells, targets, config
        counts = np.bincount(targets)
        weights = 1.0 / counts[targets]
        self.p = weights / weights.sum()
        self.vectors = feature_matrix(cells.frame(), config.features)
        side = cells.crops.shape[1]
        self.blank_target = np.zeros((side, side), np.uint8)
        self.blank_weight = np.ones((side, side), np.float32)

    def epoch(self, rng: np.random.Generator):
        n = len(self.targets)
        order = rng.choice(n, size=n, replace=True, p=self.p)
        for start in range(0, n, self.config.batch_size):
            idx = order[start : start + self.config.batch_size]
            crops = np.stack(
                [
                    augment(
                        self.cells.crops[i],
                        self.blank_target,
                        self.blank_weight,
                        rng,
                        self.config.augment,
                    )[0]
                    for i in idx
                ]
            )
            yield crops, self.vectors[idx], self.targets[idx]


def _logits(
    model: nn.Module,
    cells: CellSet,
    vectors: np.ndarray,
    device: torch.device,
    use_f: bool,
    norm: str,
) -> torch.Tensor:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(cells), 256):
            x = torch.from_numpy(normalise_crops(cells.crops[start : start + 256], norm)).to(device)
            f = torch.from_numpy(vectors[start : start + 256]).to(device)
            out.append(model(x, f if use_f else None).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The softmax temperature in [0.25, 10] minimising the NLL (a log-spaced grid search)."""
    grid = np.exp(np.linspace(math.log(0.25), math.log(10.0), 121))
    losses = [float(nn.functional.cross_entropy(logits / t, targets)) for t in grid]
    return float(grid[int(np.argmin(losses))])


def confusion(true: list[str], pred: list[str]) -> pd.DataFrame:
    """Counts, rows true report type, columns predicted (types that occur)."""
    types = [t for t in CELL_TYPES if t in set(true) | set(pred)]
    table = pd.crosstab(pd.Categorical(true, types), pd.Categorical(pred, types), dropna=False)
    table.index.name, table.columns.name = "true", "predicted"
    return table


def _scores(
    logits: torch.Tensor, targets: np.ndarray, classes: tuple[str, ...], t: float = 1.0
) -> dict:
    pred = logits.argmax(1).numpy()
    true_t = [report_type(classes[i]) for i in targets]
    pred_t = [report_type(classes[i]) for i in pred]
    return {
        "loss": float(nn.functional.cross_entropy(logits / t, torch.from_numpy(targets))),
        "accuracy": float((pred == targets).mean()),
        "type_accuracy": float(np.mean([a == b for a, b in zip(true_t, pred_t, strict=True)])),
        "true": true_t,
        "pred": pred_t,
    }


def train_classifier(cells: CellSet, config: ClassifierTrainConfig, out: Path) -> ClassifierResult:
    """Train, calibrate and save a classifier; score it on the held-out test share.

    Args:
        cells: Labelled cells (crops at the scale the classifier will use).
        config: Training settings.
        out: Output folder (created).

    Raises:
        ConfigError: Fewer than two classes, or a class too small to split.
    """
    out.mkdir(parents=True, exist_ok=True)
    classes = tuple(sorted(set(cells.labels.tolist())))
    if len(classes) < 2:
        raise ConfigError(f"training a classifier needs at least 2 classes, got {classes}")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    targets_all = np.array([classes.index(c) for c in cells.labels])
    # Strata: dataset and label, so every dataset keeps its share in each split.
    sources = np.array([image.rsplit("/", 1)[0] for image in cells.images.tolist()])
    strata = np.char.add(np.char.add(sources, "|"), cells.labels.astype(str))
    train_i, val_i, test = three_way_split(strata, config.test_fraction, config.val_fraction, rng)
    if len(val_i) == 0 or len(set(targets_all[train_i].tolist())) < len(classes):
        raise ConfigError("too few cells per class to split into training and validation")
    train_set, val_set, test_set = cells.subset(train_i), cells.subset(val_i), cells.subset(test)
    log.info(
        "classes %s; %d train, %d val, %d test cells", classes, len(train_i), len(val_i), len(test)
    )
    spec = ClassifierSpec(
        classes=classes,
        crop_px=int(cells.crops.shape[1]),
        crop_pixel_size_um=cells.crop_pixel_size_um,
        features=tuple(config.features),
        width=config.width,
        levels=config.levels,
        normalisation=config.normalisation,
    )
    device = choose_device(config.device)
    model = spec.build().to(device)
    use_f = bool(config.features)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=config.epochs, eta_min=config.lr / 100
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    batches = _Batches(train_set, targets_all[train_i], config)
    vectors = {
        name: feature_matrix(s.frame(), config.features)
        for name, s in (("val", val_set), ("test", test_set))
    }
    history: list[dict[str, float]] = []
    best = (-1.0, math.inf)
    best_state: dict[str, torch.Tensor] = {}
    best_epoch, stale = 0, 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for crops, feats, target in batches.epoch(rng):
            x = torch.from_numpy(normalise_crops(crops, config.normalisation)).to(device)
            f = torch.from_numpy(feats).to(device)
            y = torch.from_numpy(target).to(device)
            loss = loss_fn(model(x, f if use_f else None), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, seen = total + loss.item() * len(target), seen + len(target)
        scheduler.step()
        val = _scores(
            _logits(model, val_set, vectors["val"], device, use_f, config.normalisation),
            targets_all[val_i],
            classes,
        )
        row = {
            "epoch": epoch,
            "train_loss": round(total / max(seen, 1), 5),
            "val_loss": round(val["loss"], 5),
            "val_accuracy": round(val["accuracy"], 5),
            "val_type_accuracy": round(val["type_accuracy"], 5),
            "lr": optimiser.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 2),
        }
        history.append(row)
        log.info(
            "epoch %d: %s", epoch, ", ".join(f"{k} {v}" for k, v in row.items() if k != "epoch")
        )
        if (val["accuracy"], -val["loss"]) > (best[0], -best[1]):
            best, best_epoch, stale = (val["accuracy"], val["loss"]), epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                log.info("early stop at epoch %d (best %d)", epoch, best_epoch)
                break
    model.load_state_dict(best_state)
    val_logits = _logits(model, val_set, vectors["val"], device, use_f, config.normalisation)
    temperature = fit_temperature(val_logits, torch.from_numpy(targets_all[val_i]))
    metadata = {
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "best_epoch": best_epoch,
        "train_config": json.dumps({k: v for k, v in asdict(config).items() if k != "augment"}),
    }
    spec = ClassifierSpec(**{**asdict(spec), "temperature": temperature, "metadata": metadata})
    path = out / "classifier.pt"
    save_classifier(path, model.cpu(), spec)
    metrics: dict[str, float] = {"temperature": temperature, "best_epoch": best_epoch}
    val_s = _scores(val_logits, targets_all[val_i], classes, temperature)
    metrics.update({"val_accuracy": val_s["accuracy"], "val_type_accuracy": val_s["type_accuracy"]})
    confusion(val_s["true"], val_s["pred"]).to_csv(out / "confusion_val.csv")
    confusion_test = None
    if len(test):
        model.to(device)
        test_s = _scores(
            _logits(model, test_set, vectors["test"], device, use_f, config.normalisation),
            targets_all[test],
            classes,
            temperature,
        )
        metrics.update(
            {
                "test_accuracy": test_s["accuracy"],
                "test_type_accuracy": test_s["type_accuracy"],
                "test_cells": len(test),
            }
        )
        confusion_test = confusion(test_s["true"], test_s["pred"])
        confusion_test.to_csv(out / "confusion_test.csv")
        (out / "test_images.txt").write_text("\n".join(test_set.images.tolist()) + "\n")
    with (out / "history.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("classifier %s: %s", path, metrics)
    return ClassifierResult(path, spec, history, best_epoch, metrics, confusion_test)
