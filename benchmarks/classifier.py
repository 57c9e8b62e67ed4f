"""Benchmark the cell classifier: accuracy on labelled cells and its cost in ``process``.

1. ``--accuracy``: the classifier of ``--classifier`` over the labelled cells of
   each ``--data`` folder (any layout of ``train --task classify``: crop folders,
   ``labels.csv``...), found and measured by ``process`` with the default
   segmentation model; prints the accuracy over the report's types (and over
   the five normal types) and the confusion matrix of the product's calls
   (blast rule included: a normal cell called a blast counts as an error). With ``--only-images
   FILE`` only the images listed there are scored (the ``test_images.txt`` a
   training run writes: its held-out test share).
2. ``--speed``: a 2592x1944 synthetic field at 0.1 µm/px with 30 WBCs through
   ``process_slide`` (classical segmenter, which finds every synthetic cell;
   ``--model`` to change) with ``--classifier rules`` and with the classifier; the
   difference of the ``cells`` stage is what the classifier adds (crops +
   forward pass; the morphometry is measured either way).

Usage::

    .venv/bin/python benchmarks/classifier.py --accuracy --data ../shared/data/wbc-seg/jiangxi@0.15
    .venv/bin/python benchmarks/classifier.py --speed [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import numpy as np

from smearscan.cell_types import FIVE_PART, report_type
from smearscan.classifier_data import CellSet, harvest, list_labelled
from smearscan.classifier_training import confusion
from smearscan.classify import CellClassifier, load_classifier, type_cells
from smearscan.config import DEFAULT_CLASSIFIER, ClassifyConfig, ProcessConfig
from smearscan.pipeline import process_slide
from smearscan.synth import generate_field, write_field
from smearscan.train_data import DataSource


def _subset(source: DataSource, keep: set[str], root: Path) -> DataSource:
    """A class-folder copy (symlinks) of the cells of ``source`` listed in ``keep``."""
    for item in list_labelled(source.path):
        if f"{source.name}/{item.path.name}" in keep:
            folder = root / item.points[0].label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / item.path.name).symlink_to(item.path.resolve())
    return DataSource(root, source.pixel_size_um)


def accuracy(
    data: list[str], classifier: str, only: Path | None, cache: Path | None, save: Path | None
) -> None:
    loaded = load_classifier(classifier)
    if loaded is None:
        raise SystemExit("--accuracy needs a trained classifier, not rules")
    spec = loaded.spec
    for text in data:
        if text.endswith(".npz"):  # cells saved by an earlier --save-cells
            _score(CellSet.load(Path(text)), text, loaded)
            continue
        source = DataSource.parse(text)
        with tempfile.TemporaryDirectory() as tmp:
            if only is not None:  # only those images (crop folders): harvest just them
                source = _subset(source, set(only.read_text().split()), Path(tmp) / "subset")
            cells = harvest(
                [source],
                ProcessConfig(),
                crop_px=spec.crop_px,
                crop_pixel_size_um=spec.crop_pixel_size_um,
                cache_dir=cache if only is None else None,
            )
        if save is not None:
            cells.save(save)
        _score(cells, source.name, loaded)


def _score(cells: CellSet, name: str, loaded: CellClassifier) -> None:
    """Print the accuracy, the confusion matrix and the blast calls of ``cells``."""
    features, config = cells.frame(), ClassifyConfig()
    pred = type_cells(loaded, cells.crops, features, config)["cell_type"].tolist()
    true = [report_type(label) for label in cells.labels]
    hits = np.array([a == b for a, b in zip(true, pred, strict=True)])
    five = np.isin(true, FIVE_PART)
    print(f"{name}: {len(true)} cells, {int(cells.matched.sum())} matched to a found cell")
    print(f"  accuracy over report types {hits.mean():.4f}")
    if five.any():
        print(
            f"  accuracy over the five normal types ({int(five.sum())} cells) "
            f"{hits[five].mean():.4f}"
        )
    print(confusion(true, pred).to_string())
    for veto in (0.0, 0.5, 1.0):
        veto_config = dataclasses.replace(config, granulocyte_veto=veto)
        called = type_cells(loaded, cells.crops, features, veto_config)["is_blast"]
        print(f"  granulocyte_veto {veto}: {int(called.sum())} normal cells called blasts")


def speed(classifier: str, repeats: int, model: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        field = generate_field(11, 2592, 1944, 0.1, n_wbc=30)
        path = write_field(field, Path(tmp) / "field30.jpg")[0]
        seconds: dict[str, list[float]] = {"rules": [], classifier: []}
        n_cells = 0
        for run in range(repeats + 1):
            for name in seconds:
                config = ProcessConfig(model=model).with_overrides(
                    scale={"pixel_size_um": 0.1},
                    classify={"classifier": name},
                    output={"write_previews": False},
                )
                result = process_slide(path, config, Path(tmp) / f"{run}-{name}.zarr")
                n_cells = result.wbc_count or 0
                if run:  # the first round warms up
                    seconds[name].append(result.stage_seconds["cells"])
        rules, learned = statistics.median(seconds["rules"]), statistics.median(seconds[classifier])
        print(
            f"2592x1944 field, {n_cells} WBCs found (30 planted); cells stage median of {repeats}:"
        )
        print(
            f"  rules {rules:.3f} s, {classifier} {learned:.3f} s: "
            f"the classifier adds {learned - rules:.3f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument(
        "--data", action="append", default=[], help="PATH[@UM] or cells .npz (repeatable)"
    )
    parser.add_argument("--classifier", default=DEFAULT_CLASSIFIER)
    parser.add_argument("--only-images", type=Path)
    parser.add_argument("--cache", type=Path, help="Reuse harvested cells from this folder.")
    parser.add_argument("--save-cells", type=Path, help="Write the harvested cells (.npz).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--model",
        default="classical",
        help="--speed: segmentation model (classical finds every synthetic cell; the "
        "classifier's cost depends only on the number of cells)",
    )
    args = parser.parse_args()
    if args.accuracy:
        accuracy(args.data, args.classifier, args.only_images, args.cache, args.save_cells)
    if args.speed:
        speed(args.classifier, args.repeats, args.model)


if __name__ == "__main__":
    main()
