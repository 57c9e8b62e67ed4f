"""The settings of a training run (``smearscan train``), validated once.

:class:`TrainConfig` is stored, as plain values, in every checkpoint a run
writes: a resumed run must have the same settings (except
:data:`RESUMABLE_CHANGES`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from smearscan.augment import AugmentConfig
from smearscan.errors import ConfigError
from smearscan.loss_spec import DEFAULT_LOSS

#: Settings that may change when a run is resumed (train longer, on another device);
#: ``epochs`` only with the plateau schedule (the cosine schedule is laid out over them).
RESUMABLE_CHANGES = ("epochs", "early_stop_patience", "device", "amp")
#: Learning-rate schedules of :class:`TrainConfig`.
SCHEDULES = ("cosine", "plateau")
#: Final learning rate of the cosine schedule, as a fraction of ``lr``.
COSINE_FLOOR = 1e-2


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in its checkpoints).

    Attributes:
        arch, width, depth, deep_supervision: The network (:func:`build_model`).
        input_pixel_size_um: The model's scale, µm/px.
        loss: Loss spec (:func:`smearscan.loss_spec.build_loss`), e.g. ``ce+dice``.
        epochs: Most epochs.
        batch_size: Crops per step.
        crop_px: Side of a training crop, model pixels (a multiple of ``2**depth``).
        lr: Initial Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: ``cosine`` (the learning rate falls from ``lr`` to ``lr * 1e-2`` along a
            half cosine over ``epochs``; the default) or ``plateau`` (``ReduceLROnPlateau``
            on the validation score with ``lr_patience`` and ``lr_factor``).
        lr_patience: Plateau schedule: epochs without improvement before the rate is cut.
        lr_factor: Plateau schedule: the cut (new = old * factor).
        early_stop_patience: Epochs without improvement before training stops.
        val_fraction: Share of each dataset held out for validation (single run).
        folds: ``k`` of k-fold cross-validation (0: one run with ``val_fraction``).
        seed: Seed of every random choice.
        device: ``auto``, ``cpu`` or ``cuda``.
        amp: Mixed precision on CUDA.
        weak_weight: Loss weight of box and point labels.
        max_crops_per_sample: Crops per epoch from one large image.
        strong_repeat: Times each image with an exact mask is drawn per epoch (exact
            masks are few beside box-labelled fields; 4 gives the shipped model's mix).
        augment: Augmentation ranges; scaling 0.8-1.25 by default, wider than
            :class:`AugmentConfig`'s, so a pixel size estimated 20 % off still works.
    """

    arch: str = "resunet"
    width: int = 8
    depth: int = 4
    deep_supervision: bool = False
    input_pixel_size_um: float = 0.25
    loss: str = DEFAULT_LOSS
    epochs: int = 60
    batch_size: int = 16
    crop_px: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-5
    schedule: str = "cosine"
    lr_patience: int = 4
    lr_factor: float = 0.5
    early_stop_patience: int = 12
    val_fraction: float = 0.2
    folds: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    weak_weight: float = 0.3
    max_crops_per_sample: int = 4
    strong_repeat: int = 1
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(scale_range=(0.8, 1.25)))

    def __post_init__(self) -> None:
        multiple = 2**self.depth
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.strong_repeat >= 1, f"strong repeat must be >= 1, got {self.strong_repeat}"),
            (
                self.crop_px >= multiple and self.crop_px % multiple == 0,
                f"crop size must be a multiple of 2**depth = {multiple}, got {self.crop_px}",
            ),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (0 < self.lr_factor < 1, f"lr factor must be in (0, 1), got {self.lr_factor}"),
            (
                self.schedule in SCHEDULES,
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
            ),
            (0 < self.val_fraction < 1, f"val fraction must be in (0, 1), got {self.val_fraction}"),
            (self.folds == 0 or self.folds >= 2, f"folds must be 0 or >= 2, got {self.folds}"),
            (self.input_pixel_size_um > 0, "input pixel size must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def arch_args(self) -> dict[str, Any]:
        """The :func:`build_model` arguments (the checkpoint's ``arch`` entry)."""
        return {
            "arch": self.arch,
            "width": self.width,
            "depth": self.depth,
            "n_classes": 5,
            "input_pixel_size_um": self.input_pixel_size_um,
            "deep_supervision": self.deep_supervision,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for checkpoints and the CSV's run record)."""
        d = dataclasses.asdict(self)
        d["augment"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["augment"].items()}
        return d
