"""``smearscan train`` and ``smearscan evaluate``: thin adapters over
:mod:`smearscan.training` and :mod:`smearscan.scoring`, registered on the
``smearscan`` app by :mod:`smearscan.cli`.

Exit codes: 0 done, 2 usage, configuration or dataset error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from smearscan.console import LogFormat, LogFormatOption, fail_usage
from smearscan.errors import ConfigError, SmearscanError

log = logging.getLogger("smearscan.cli")

DataOption = Annotated[
    list[str],
    typer.Option(
        "--data",
        "-d",
        metavar="PATH[@UM]",
        help="Annotated dataset folder, repeatable; PATH@UM gives its pixel size in µm/px "
        "(e.g. data/wbc-seg/jiangxi@0.15). Layouts: images/+masks/ (label masks "
        "0/128/255), images/+labels/ (YOLO), *.xml (Pascal VOC), *.xyc (ALL-IDB).",
        show_default=False,
    ),
]


def train(
    data: DataOption,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output folder: best.pt (+ .sha256, usable as process --model), last.pt "
            "(resume), history.csv; with --folds, fold1/..foldK/ and cv_summary.csv. "
            "classify: classifier.pt (+ .sha256, usable as process --classifier), "
            "history.csv, confusion_val.csv, confusion_test.csv, metrics.json.",
            show_default=False,
        ),
    ],
    task: Annotated[
        str,
        typer.Option(
            help="segment (a segmentation model) or classify (the cell classifier: crop "
            "folders one per class, cells.csv/labels.csv, YOLO/VOC boxes with class names, "
            "ALL-IDB .xyc blasts)."
        ),
    ] = "segment",
    arch: Annotated[str, typer.Option(help="unet, unetpp, resunet or vnet.")] = "resunet",
    width: Annotated[
        int | None,
        typer.Option(min=1, help="Channels of the first level [segment: 8, classify: 16]."),
    ] = None,
    depth: Annotated[int, typer.Option(min=1, max=6, help="Down-samplings.")] = 4,
    deep_supervision: Annotated[
        bool, typer.Option("--deep-supervision", help="UNet++: one loss per head.")
    ] = False,
    input_pixel_size: Annotated[
        float, typer.Option("--input-pixel-size", help="Model scale, µm/px.")
    ] = 0.25,
    loss: Annotated[
        str, typer.Option(help="Loss terms, e.g. ce+dice, 0.5*focal(gamma=2)+tversky(0.3,0.7).")
    ] = "ce+dice",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Most epochs [segment: 60, classify: 40].")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Crops per step [segment: 16, classify: 32].")
    ] = None,
    crop: Annotated[
        int, typer.Option(help="Crop side in model pixels (multiple of 2**depth).")
    ] = 128,
    lr: Annotated[float, typer.Option(help="Initial Adam learning rate.")] = 2e-3,
    schedule: Annotated[
        str,
        typer.Option(
            help="Learning rate: cosine (lr down to lr/100 over --epochs) or plateau "
            "(halved after 4 epochs without a better validation score)."
        ),
    ] = "cosine",
    patience: Annotated[
        int, typer.Option(min=1, help="Early stopping: epochs without a better validation score.")
    ] = 12,
    folds: Annotated[
        int, typer.Option(min=0, help="k-fold cross-validation (0: one run, see --val-fraction).")
    ] = 0,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Share of each dataset (classify: of each class) for validation "
            "[segment: 0.2, classify: 0.15]."
        ),
    ] = None,
    test_fraction: Annotated[
        float,
        typer.Option(
            help="classify: share of each class held out for the final test (scored once, "
            "confusion_test.csv)."
        ),
    ] = 0.3,
    model: Annotated[
        str,
        typer.Option(
            help="classify: segmentation model that finds and measures the labelled cells "
            "(as process will)."
        ),
    ] = "unet-v1",
    crop_pixel_size: Annotated[
        float, typer.Option(help="classify: crop scale, µm/px (96 px crops).")
    ] = 0.3,
    normalisation: Annotated[
        str,
        typer.Option(
            help="classify: crop normalisation, scale (0..255 to [-1, 1]) or standardise "
            "(each crop's channels to zero mean, unit variance: takes a stain's tint out)."
        ),
    ] = "scale",
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = True,
    weak_weight: Annotated[float, typer.Option(help="Loss weight of box and point labels.")] = 0.3,
    max_crops: Annotated[
        int,
        typer.Option(min=1, help="Most crops per epoch from one image (large fields give more)."),
    ] = 4,
    strong_repeat: Annotated[
        int,
        typer.Option(min=1, help="Times each image with an exact mask is drawn per epoch."),
    ] = 1,
    teacher: Annotated[
        str,
        typer.Option(
            help="Segmenter that fills in what the labels leave open (background vs RBC "
            "outside wbc-seg cells, nucleus vs cytoplasm inside boxes): classical or none."
        ),
    ] = "classical",
    resume: Annotated[
        Path | None, typer.Option(help="last.pt of an interrupted run with the same settings.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use at most N images per dataset.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Train a segmentation model (masks, boxes or points) or, with --task classify,
    the cell classifier (labelled cells).

    Prints one line per epoch and writes it to OUT/history.csv. Segmentation: the
    best epoch's checkpoint OUT/best.pt runs with `smearscan process --model
    OUT/best.pt`. Classify: OUT/classifier.pt runs with `smearscan process
    --classifier OUT/classifier.pt`; OUT/confusion_test.csv scores it on the
    held-out cells.
    """
    from smearscan.console import setup_logging
    from smearscan.registry import load_model
    from smearscan.train_config import TrainConfig
    from smearscan.train_data import DataSource, load_samples
    from smearscan.training import train as run_training

    setup_logging(out / "train.log", quiet=quiet, verbose=False, rich=False, log_format=log_format)
    if task == "classify":
        _train_classifier(
            data,
            out,
            model=model,
            width=width or 16,
            epochs=epochs or 40,
            batch_size=batch_size or 32,
            lr=lr,
            patience=patience,
            test_fraction=test_fraction,
            val_fraction=0.15 if val_fraction is None else val_fraction,
            crop_pixel_size=crop_pixel_size,
            normalisation=normalisation,
            seed=seed,
            device=device,
            limit=limit,
        )
        return
    if task != "segment":
        fail_usage(f"--task must be segment or classify, got {task!r}")
    width, epochs, batch_size = width or 8, epochs or 60, batch_size or 16
    val_fraction = 0.2 if val_fraction is None else val_fraction
    try:
        config = TrainConfig(
            arch=arch,
            width=width,
            depth=depth,
            deep_supervision=deep_supervision,
            input_pixel_size_um=input_pixel_size,
            loss=loss,
            epochs=epochs,
            batch_size=batch_size,
            crop_px=crop,
            lr=lr,
            schedule=schedule,
            early_stop_patience=patience,
            folds=folds,
            val_fraction=val_fraction,
            seed=seed,
            device=device,
            amp=amp,
            weak_weight=weak_weight,
            max_crops_per_sample=max_crops,
            strong_repeat=strong_repeat,
        )
        if teacher not in ("classical", "none"):
            raise ConfigError(f"--teacher must be classical or none, got {teacher!r}")
        sources = [DataSource.parse(d) for d in data]
        samples = load_samples(
            sources,
            input_pixel_size,
            weak_weight=weak_weight,
            limit=limit,
            teacher=load_model("classical") if teacher == "classical" else None,
        )
        metadata = {
            "teacher": teacher,
            "data": [
                f"{s.path}@{s.pixel_size_um}" if s.pixel_size_um else str(s.path) for s in sources
            ],
        }
        results = run_training(
            samples, config, out, resume=resume, name=out.name, metadata=metadata
        )
    except (SmearscanError, ValueError) as exc:
        fail_usage(str(exc))
    for result in results:
        row = result.history[result.best_epoch - 1]
        scores = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.endswith("_dice"))
        typer.echo(f"{result.best_path}: best epoch {result.best_epoch}; {scores}")


def _train_classifier(
    data: list[str],
    out: Path,
    *,
    model: str,
    width: int,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int,
    test_fraction: float,
    val_fraction: float,
    crop_pixel_size: float,
    normalisation: str,
    seed: int,
    device: str,
    limit: int | None,
) -> None:
    """``train --task classify``: harvest the labelled cells, train, calibrate, test."""
    from smearscan.cell_crops import CROP_PX
    from smearscan.classifier_data import harvest
    from smearscan.classifier_training import ClassifierTrainConfig, train_classifier
    from smearscan.config import ProcessConfig
    from smearscan.train_data import DataSource

    try:
        config = ClassifierTrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            width=width,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            patience=patience,
            seed=seed,
            device=device,
            normalisation=normalisation,
        )
        process = ProcessConfig(model=model).with_overrides(inference={"device": device})
        sources = [DataSource.parse(d) for d in data]
        cells = harvest(
            sources,
            process,
            crop_px=CROP_PX,
            crop_pixel_size_um=crop_pixel_size,
            cache_dir=out,
            limit=limit,
        )
        result = train_classifier(cells, config, out)
    except (SmearscanError, ValueError) as exc:
        fail_usage(str(exc))
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if "accuracy" in k)
    typer.echo(f"{result.path}: best epoch {result.best_epoch}; {scores}")
    typer.echo(f"use it with: smearscan process ... --classifier {result.path}")


def evaluate(
    data: DataOption,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Scores: .xlsx (Overall + PerImage) or .csv (+ _overall.csv).",
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(help="Model to run over the images (a name or PATH.pt)."),
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            help="OUT.xlsx of an earlier `process` run over the images, instead of --model."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    limit: Annotated[int | None, typer.Option(help="Score at most N images per dataset.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Score a model, or an earlier run, against annotated images.

    Per image and overall: nucleus and whole-cell Dice/IoU (label masks), WBC
    detection precision/recall/F1 by centroid (boxes, points), and WBC / RBC /
    platelet count errors (boxes).
    """

    from smearscan.config import ProcessConfig
    from smearscan.console import setup_logging
    from smearscan.scoring import evaluate as run_evaluation
    from smearscan.scoring import write_scores
    from smearscan.train_data import DataSource

    setup_logging(None, quiet=quiet, verbose=False, rich=False, log_format=log_format)
    work = out.with_name(f"{out.stem}_runs")
    try:
        config = ProcessConfig().with_overrides(inference={"device": device})
        sources = [DataSource.parse(d) for d in data]
        rows, overall = run_evaluation(
            sources, model=model, run_report=run, work_dir=work, config=config, limit=limit
        )
        written = write_scores(out, rows, overall)
    except SmearscanError as exc:
        fail_usage(str(exc))
    for summary in overall:
        typer.echo(
            ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()
            )
        )
    typer.echo("wrote " + ", ".join(map(str, written)))


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the ``smearscan`` app."""
    app.command()(train)
    app.command()(evaluate)
