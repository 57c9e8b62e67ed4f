"""The training loop of the segmentation models (``smearscan train``).

:func:`fit` trains one network on :class:`~smearscan.train_data.Sample` lists:
random crops at the model's scale, augmented (:mod:`smearscan.augment`), Adam,
``ReduceLROnPlateau`` on the validation score, early stopping, the best and the
last epoch saved as checkpoints (:mod:`smearscan.checkpoint`), one CSV row per
epoch. On CUDA it runs with automatic mixed precision.

Reproducible: the crops, augmentations and batch order of epoch ``e`` come
from generators seeded with ``(seed, e)`` only, so a run stopped after any
epoch and resumed from its ``last.pt`` (:func:`fit` with ``resume=``) ends
with the same weights as a run that never stopped (on the same device and
thread count).

:func:`cross_validate` runs ``k``-fold cross-validation (folds stratified by
dataset) and :func:`train` picks between the two from :class:`TrainConfig`.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from smearscan.atomic import atomic_write
from smearscan.augment import augment
from smearscan.checkpoint import load_checkpoint, save_checkpoint
from smearscan.errors import ConfigError
from smearscan.inference import choose_device, input_affine
from smearscan.loss_spec import build_loss, deep_supervision_loss
from smearscan.models.factory import build_model
from smearscan.models.network import SegmentationNet
from smearscan.train_config import COSINE_FLOOR, RESUMABLE_CHANGES, TrainConfig
from smearscan.train_data import Sample, crops_per_epoch, random_crop, split_folds
from smearscan.weak_labels import IGNORE, PartialLabelLoss

log = logging.getLogger(__name__)

NUCLEUS = 3
CELL = (2, 3)
#: Called after each epoch with its history row.
EpochHook = Callable[[dict[str, Any]], None]


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        best_path: Checkpoint of the best epoch (``best.pt``).
        last_path: Checkpoint of the last epoch (``last.pt``), for resuming.
        history: One dict per epoch (the CSV rows).
        best_epoch: Epoch (1-based) of the best score.
        best_score: Validation score of that epoch (higher is better).
    """

    best_path: Path
    last_path: Path
    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def _epoch_batches(
    samples: Sequence[Sample], config: TrainConfig, rng: np.random.Generator
) -> list[list[int]]:
    """Sample indices of each step of an epoch (large images give several crops, images
    with exact masks ``strong_repeat`` times as many)."""
    order = [
        i
        for i, s in enumerate(samples)
        for _ in range(
            crops_per_epoch(s, config.crop_px, config.max_crops_per_sample)
            * (config.strong_repeat if s.strong else 1)
        )
    ]
    order = [order[j] for j in rng.permutation(len(order))]
    return [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]


def _to_device(
    images: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    affine: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 ``(N, H, W, 3)`` images -> normalised float ``(N, 3, H, W)``, plus targets."""
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    x = torch.addcmul(affine[1], x, affine[0]).contiguous()
    return x, torch.from_numpy(targets).to(device).long(), torch.from_numpy(weights).to(device)


def _make_batch(
    samples: Sequence[Sample], indices: Sequence[int], config: TrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = [
        augment(*random_crop(samples[i], config.crop_px, rng), rng, config.augment) for i in indices
    ]
    return tuple(np.stack(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


class _Run:
    """The mutable state of one training run (model, optimiser, schedule, history)."""

    def __init__(self, config: TrainConfig, device: torch.device, name: str) -> None:
        self.config = config
        self.device = device
        torch.manual_seed(config.seed)
        self.model: SegmentationNet = build_model(**config.arch_args, name=name).to(device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler: Any
        if config.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=config.epochs, eta_min=config.lr * COSINE_FLOOR
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=config.lr_factor, patience=config.lr_patience
            )
        self.amp = config.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss = PartialLabelLoss(build_loss(config.loss, ignore_index=IGNORE))
        self.affine = input_affine(self.model.spec, device)
        self.epoch = 0
        self.best_score = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []

    def state(self) -> dict[str, Any]:
        """Resumable training state (plain values and tensors)."""
        return {
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "config": self.config.to_dict(),
        }

    def restore(self, path: Path) -> None:
        """Continue from ``last.pt`` of an interrupted run with the same config.

        Raises:
            ConfigError: The checkpoint holds no training state or another config.
        """
        loaded = load_checkpoint(path, map_location=self.device)
        state = loaded.training
        if not state:
            raise ConfigError(f"{path}: no training state to resume from")
        stored, mine = dict(state.get("config") or {}), self.config.to_dict()
        free = [k for k in RESUMABLE_CHANGES if k != "epochs" or self.config.schedule != "cosine"]
        for key in free:
            stored.pop(key, None)
            mine.pop(key, None)
        if stored != mine:
            changed = sorted(k for k in mine if stored.get(k) != mine[k])
            raise ConfigError(
                f"{path}: trained with other settings ({', '.join(changed)}); cannot resume"
            )
        self.model.load_state_dict(loaded.model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.history = list(state["history"])

    def train_epoch(self, samples: Sequence[Sample]) -> float:
        """One pass over the training crops; returns the mean loss."""
        rng = _epoch_rng(self.config.seed, self.epoch)
        torch.manual_seed(int(rng.integers(2**62)))
        self.model.train()
        total, steps = 0.0, 0
        for indices in _epoch_batches(samples, self.config, rng):
            x, t, w = _to_device(
                *_make_batch(samples, indices, self.config, rng), self.affine, self.device
            )
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, enabled=self.amp):
                heads = self.model.forward_heads(x)
            loss = deep_supervision_loss(self.loss, [h.float() for h in heads], t, w)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach())
            steps += 1
        return total / max(1, steps)


def predict_sample(
    model: nn.Module, image: np.ndarray, affine: tuple[torch.Tensor, torch.Tensor], multiple: int
) -> torch.Tensor:
    """Logits ``(C, H, W)`` of a whole model-scale image (mirror-padded to ``multiple``)."""
    h, w = image.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    padded = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="symmetric") if ph or pw else image
    device = affine[0].device
    x = torch.from_numpy(np.ascontiguousarray(padded)[None]).to(device).permute(0, 3, 1, 2)
    x = torch.addcmul(affine[1], x.float(), affine[0])
    return model(x)[0, :, :h, :w].float()


def _is_cell(classes: torch.Tensor) -> torch.Tensor:
    """Whether each pixel is WBC cytoplasm or nucleus (bool, same shape)."""
    return (classes == CELL[0]) | (classes == CELL[1])


def _dice(pred: torch.Tensor, truth: torch.Tensor) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


@torch.inference_mode()
def validate(run: _Run, samples: Sequence[Sample]) -> dict[str, float]:
    """Validation loss and, on exact masks, mean nucleus and whole-cell Dice per dataset."""
    run.model.eval()
    losses: list[float] = []
    dice: dict[str, list[float]] = {}
    for s in samples:
        logits = predict_sample(run.model, s.image, run.affine, 2**run.config.depth)
        target = torch.from_numpy(s.target).to(run.device).long()
        weight = torch.from_numpy(s.weight).to(run.device)
        losses.append(float(run.loss(logits[None], target[None], weight[None])))
        if s.strong:
            pred = logits.argmax(0)
            dice.setdefault(f"{s.source}:nucleus_dice", []).append(
                _dice(pred == NUCLEUS, target == NUCLEUS)
            )
            dice.setdefault(f"{s.source}:cell_dice", []).append(
                _dice(_is_cell(pred), _is_cell(target))
            )
    row = {"val_loss": float(np.mean(losses)) if losses else math.nan}
    row.update({key: float(np.mean(v)) for key, v in sorted(dice.items())})
    return row


def validation_score(row: Mapping[str, float]) -> float:
    """Model selection score: the mean Dice over datasets with masks, else ``-val_loss``."""
    dice = [v for k, v in row.items() if k.endswith("_dice")]
    return float(np.mean(dice)) if dice else -float(row["val_loss"])


def write_history(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Write the per-epoch rows as CSV (atomically; columns in first-seen order)."""
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)

    atomic_write(path, write)


def fit(
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    config: TrainConfig,
    out_dir: Path,
    *,
    resume: Path | None = None,
    name: str = "trained",
    metadata: Mapping[str, Any] | None = None,
    on_epoch: EpochHook | None = None,
) -> FitResult:
    """Train one model; write ``best.pt``, ``last.pt`` and ``history.csv`` to ``out_dir``.

    Args:
        train_samples: Samples to learn from (at the model's scale).
        val_samples: Held-out samples scored after every epoch.
        config: The run's settings.
        out_dir: Output folder (created).
        resume: ``last.pt`` of an interrupted run of the same config to continue.
        name: Model name recorded in the checkpoint's spec.
        metadata: Extra information stored in the checkpoints (data, command line).
        on_epoch: Called with each epoch's history row (progress display).

    Raises:
        ConfigError: No training or validation sample, or a resume checkpoint of another run.
    """
    if not train_samples or not val_samples:
        raise ConfigError("training needs at least one training and one validation image")
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(config, choose_device(config.device), name)
    if resume is not None:
        run.restore(resume)
        log.info("resumed %s at epoch %d", resume, run.epoch)
    meta = {
        **dict(metadata or {}),
        "config": config.to_dict(),
        "train_images": len(train_samples),
        "val_images": len(val_samples),
    }
    best, last = out_dir / "best.pt", out_dir / "last.pt"
    while run.epoch < config.epochs and run.bad_epochs < config.early_stop_patience:
        start = time.perf_counter()
        train_loss = run.train_epoch(train_samples)
        run.epoch += 1
        row: dict[str, Any] = {"epoch": run.epoch, "lr": run.optimizer.param_groups[0]["lr"]}
        row["train_loss"] = train_loss
        row.update(validate(run, val_samples))
        score = validation_score(row)
        row.update(score=score, seconds=round(time.perf_counter() - start, 2))
        if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            run.scheduler.step(score)
        else:
            run.scheduler.step()
        if score > run.best_score:
            run.best_score, run.best_epoch, run.bad_epochs = score, run.epoch, 0
            save_checkpoint(best, run.model, arch=config.arch_args, metadata={**meta, **row})
        else:
            run.bad_epochs += 1
        run.history.append(row)
        write_history(out_dir / "history.csv", run.history)
        save_checkpoint(last, run.model, arch=config.arch_args, training=run.state(), metadata=meta)
        log.info(
            "epoch %d: %s",
            run.epoch,
            ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"),
        )
        if on_epoch is not None:
            on_epoch(row)
    return FitResult(best, last, run.history, run.best_epoch, run.best_score)


def write_names(path: Path, samples: Sequence[Sample]) -> None:
    """Write the samples' names (``source/file``), one per line (the held-out images)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = "".join(f"{s.name}\n" for s in samples)
    atomic_write(path, partial(Path.write_text, data=names))


def holdout_split(
    samples: Sequence[Sample], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """One stratified ``(train, validation)`` split, ``val_fraction`` of each dataset held out."""
    train: list[Sample] = []
    val: list[Sample] = []
    by_source: dict[str, list[Sample]] = {}
    for s in samples:
        by_source.setdefault(s.source, []).append(s)
    rng = np.random.default_rng(seed)
    for items in by_source.values():
        n_val = max(1, round(len(items) * val_fraction)) if len(items) > 1 else 0
        order = rng.permutation(len(items))
        val.extend(items[i] for i in sorted(order[:n_val]))
        train.extend(items[i] for i in sorted(order[n_val:]))
    return train, val


def cross_validate(
    samples: Sequence[Sample],
    config: TrainConfig,
    out_dir: Path,
    **kwargs: Any,
) -> list[FitResult]:
    """``config.folds``-fold cross-validation: one :func:`fit` per fold in ``out_dir/foldN``.

    Each fold folder also lists its held-out images (``val_images.txt``) for
    scoring at the source resolution. Writes
    ``cv_summary.csv`` with each fold's best validation row and the mean.
    ``kwargs`` go to :func:`fit` (``resume`` is not supported here).
    """
    results = []
    for i, (train_part, val_part) in enumerate(split_folds(samples, config.folds, config.seed)):
        log.info(
            "fold %d/%d: %d train, %d validation images",
            i + 1,
            config.folds,
            len(train_part),
            len(val_part),
        )
        fold_dir = out_dir / f"fold{i + 1}"
        write_names(fold_dir / "val_images.txt", val_part)
        results.append(fit(train_part, val_part, config, fold_dir, **kwargs))
    rows = [{"fold": i + 1, **r.history[r.best_epoch - 1]} for i, r in enumerate(results)]
    means = {
        k: float(np.mean([row[k] for row in rows]))
        for k in rows[0]
        if k != "fold" and all(isinstance(row.get(k), int | float) for row in rows)
    }
    write_history(out_dir / "cv_summary.csv", [*rows, {"fold": "mean", **means}])
    return results


def train(
    samples: Sequence[Sample],
    config: TrainConfig,
    out_dir: Path,
    *,
    resume: Path | None = None,
    **kwargs: Any,
) -> list[FitResult]:
    """Train as ``config`` says: k-fold cross-validation, or one run on a held-out split
    (its images listed in ``out_dir/val_images.txt``).

    Raises:
        ConfigError: ``resume`` with cross-validation (resume one fold's run instead).
    """
    if config.folds:
        if resume is not None:
            raise ConfigError("--resume continues one run; resume a fold with its own last.pt")
        return cross_validate(samples, config, out_dir, **kwargs)
    train_part, val_part = holdout_split(samples, config.val_fraction, config.seed)
    write_names(out_dir / "val_images.txt", val_part)
    return [fit(train_part, val_part, config, out_dir, resume=resume, **kwargs)]
