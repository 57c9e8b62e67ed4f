"""The shipped cell classifier: recorded sha256, default of ``process``, held-out accuracy.

The accuracy test takes the first cells of each class of ``pbc-cells`` from the
training run's held-out test share (listed in
``smearscan/weights/cellnet-v1.held_out.txt``) and runs them through the product
(found and measured by the default segmentation model, cropped, classified,
blast rule applied): the report type must be right for at least
:data:`ACCURACY_MIN` of them. The full held-out figure is in the model card.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from smearscan import classify, registry
from smearscan.cell_types import report_type
from smearscan.classifier_data import CellSet, harvest, list_labelled
from smearscan.config import DEFAULT_CLASSIFIER, ClassifyConfig, ProcessConfig
from smearscan.errors import ModelError
from smearscan.train_data import DataSource

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PBC = DATA / "pbc-cells"
HELD_OUT = registry.WEIGHTS_DIR / f"{DEFAULT_CLASSIFIER}.held_out.txt"
#: Held-out cells per class scored here (of 75 per class held out).
PER_CLASS = 5
#: On the full held-out share the shipped classifier reaches more (model card).
ACCURACY_MIN = 0.9


def test_default_classifier_is_the_shipped_one() -> None:
    assert ProcessConfig().classify.classifier == DEFAULT_CLASSIFIER
    assert DEFAULT_CLASSIFIER in registry.SHIPPED_CLASSIFIERS
    path, digest = classify.classifier_path(DEFAULT_CLASSIFIER)
    assert path.is_file() and path.stat().st_size < 5 * 2**20
    loaded = classify.load_classifier(DEFAULT_CLASSIFIER)
    assert loaded is not None and loaded.sha256 == digest
    assert 0.25 <= loaded.spec.temperature <= 10


def test_a_changed_classifier_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path, _ = classify.classifier_path(DEFAULT_CLASSIFIER)
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelError, match="sha256"):
        classify.load_classifier(DEFAULT_CLASSIFIER)


@pytest.mark.skipif(not PBC.is_dir(), reason=f"reference data not found: {PBC}")
def test_held_out_pbc_cells_are_typed_right(tmp_path: Path) -> None:
    listed = HELD_OUT.read_text().split()
    held_out = {name.rsplit("/", 1)[1] for name in listed if name.startswith("data/pbc-cells/")}
    assert len(held_out) == 600, "30 % of the 2000 pbc-cells crops"
    chosen = 0
    for item in list_labelled(PBC):
        label = item.points[0].label
        folder = tmp_path / "pbc" / label
        if item.path.name in held_out and len(list(folder.glob("*"))) < PER_CLASS:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / item.path.name).symlink_to(item.path)
            chosen += 1
    subset = tmp_path / "pbc"
    loaded = classify.load_classifier(DEFAULT_CLASSIFIER)
    assert loaded is not None
    cells: CellSet = harvest(
        [DataSource(subset, 0.1)],
        ProcessConfig(),
        crop_px=loaded.spec.crop_px,
        crop_pixel_size_um=loaded.spec.crop_pixel_size_um,
    )
    assert len(cells) == chosen == 8 * PER_CLASS
    types = classify.type_cells(loaded, cells.crops, cells.frame(), ClassifyConfig())
    pred = types["cell_type"]
    true = [report_type(label) for label in cells.labels]
    accuracy = float(np.mean(pred.to_numpy() == np.array(true)))
    assert accuracy >= ACCURACY_MIN, list(zip(cells.images, true, pred, strict=True))
    assert not pred.eq("blast").any(), "a normal PBC cell was called a blast"
