"""The cell classifier's parts: crops, feature vectors, the blast rule, type assignment, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from smearscan.blast import blast_probability, morphology_score
from smearscan.cell_crops import FEATURES, cut_crops, feature_matrix
from smearscan.cell_types import CELL_TYPES, report_type
from smearscan.classify import (
    ClassifierSpec,
    assign_types,
    classify_cells,
    load_classifier,
    save_classifier,
)
from smearscan.config import ClassifyConfig
from smearscan.errors import ConfigError, ModelError
from smearscan.resample import array_reader


def _cell(**overrides: float) -> dict[str, float]:
    """Morphometry of a textbook blast: 15 µm (2 RBCs), N:C 0.88, round single nucleus."""
    row = {
        "equivalent_diameter_um": 15.0,
        "size_vs_rbc": 2.0,
        "nc_ratio": 0.88,
        "nucleus_circularity": 0.92,
        "nucleus_lobes": 1,
        "cytoplasm_mean_lab_l": 60.0,
        "solidity": 0.97,
    }
    row.update(overrides)
    return row


def _uniform(n: int, **p: float) -> pd.DataFrame:
    frame = pd.DataFrame(0.0, index=range(n), columns=list(CELL_TYPES))
    for k, v in p.items():
        frame[k] = v
    return frame


def test_crop_is_centred_on_the_cell_at_the_crop_scale():
    image = np.full((400, 500, 3), 200, np.uint8)
    image[148:153, 318:323] = 0  # a 5 px dark spot centred on (x=320, y=150)
    crop = cut_crops(array_reader(image), np.array([[320.0, 150.0]]), 0.1, 96, 0.3)[0]
    grey = crop.mean(axis=2)
    ys, xs = np.nonzero(grey < 150)
    # the crop centre lies between pixels 47 and 48
    assert abs(ys.mean() - 47.5) <= 0.6 and abs(xs.mean() - 47.5) <= 0.6
    # 0.1 -> 0.3 µm/px: the 5 px spot spans ~1.7 px
    assert len(ys) <= 9


def test_crop_at_the_image_edge_is_mirrored_not_cut():
    image = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    crops = cut_crops(array_reader(image), np.array([[0.0, 0.0], [99.0, 50.0]]), 0.3, 32, 0.3)
    assert crops.shape == (2, 32, 32, 3)
    assert crops[0, 16, 16].tolist() == image[0, 0].tolist()


def test_feature_matrix_scales_values_and_flags_missing():
    rows = [_cell(), {**_cell(), "size_vs_rbc": np.nan, "nc_ratio": None}]
    m = feature_matrix(rows, list(FEATURES))
    assert m.shape == (2, 2 * len(FEATURES)) and m.dtype == np.float32
    j = list(FEATURES).index("size_vs_rbc")
    assert m[0, j] == pytest.approx(2.0 / FEATURES["size_vs_rbc"])
    assert m[1, j] == 0 and m[1, len(FEATURES) + j] == 1 and m[0, len(FEATURES) + j] == 0
    with pytest.raises(ValueError, match="unknown classifier features"):
        feature_matrix(rows, ["colour"])


def test_blast_rule_accepts_a_blast_and_rejects_each_missing_criterion():
    config = ClassifyConfig()
    rows = pd.DataFrame(
        [
            _cell(),  # blast
            _cell(equivalent_diameter_um=9.0, size_vs_rbc=1.2),  # typical lymphocyte size
            _cell(nc_ratio=0.6),  # too much cytoplasm (monocyte-like)
            _cell(nucleus_lobes=3),  # segmented nucleus
            _cell(nucleus_circularity=0.5),  # folded / kidney nucleus
            _cell(cytoplasm_mean_lab_l=30.0),  # basophil-dark granules
            _cell(size_vs_rbc=np.nan),  # no RBC on the slide: diameter / 7.5 µm
        ]
    )
    score = morphology_score(rows, config)
    assert score[0] == pytest.approx(1.0) and score[6] == pytest.approx(1.0)
    assert (score[1:6] == 0).all()


def test_a_lymphocyte_of_typical_size_never_scores_whatever_its_nucleus():
    sizes = np.linspace(6.5, 10.0, 15)
    rows = pd.DataFrame([_cell(equivalent_diameter_um=d, size_vs_rbc=d / 7.5) for d in sizes])
    assert (morphology_score(rows, ClassifyConfig()) == 0).all()


def test_granulocyte_veto_and_learned_blast_class():
    morph = np.array([1.0, 1.0, 0.0])
    probs = _uniform(3, lymphocyte=0.5, other=0.5)
    probs.loc[1, ["neutrophil", "lymphocyte", "other"]] = [0.9, 0.1, 0.0]
    # default: no veto, the morphology decides
    assert blast_probability(morph, probs, ClassifyConfig()).tolist() == [1.0, 1.0, 0.0]
    config = ClassifyConfig(granulocyte_veto=1.0)
    p = blast_probability(morph, probs, config)
    assert p[0] == pytest.approx(1.0) and p[1] == pytest.approx(0.1) and p[2] == 0
    learned = np.array([0.0, 0.0, 0.8])
    assert blast_probability(morph, probs, config, learned)[2] == pytest.approx(0.8)


def test_assign_types_calls_blasts_and_takes_the_best_other_type():
    probs = _uniform(2, lymphocyte=0.7, monocyte=0.3)
    out = assign_types(probs, np.array([0.6, 0.2]), threshold=0.5)
    assert out["cell_type"].tolist() == ["blast", "lymphocyte"]
    assert out["type_confidence"].tolist() == [0.6, 0.7]
    assert out["is_blast"].tolist() == [True, False]


def test_report_types_of_training_labels():
    assert report_type("IG") == "other" and report_type("erythroblast") == "other"
    assert report_type("myeloblast") == "blast" and report_type("neutrophil") == "neutrophil"
    assert report_type("something else") == "other"


def test_classifier_file_round_trip_and_tamper_check(tmp_path):
    spec = ClassifierSpec(("lymphocyte", "neutrophil"), 32, 0.3, ("nc_ratio",), width=4, levels=2)
    torch.manual_seed(0)
    model = spec.build()
    path = tmp_path / "c.pt"
    digest = save_classifier(path, model, spec)
    loaded = load_classifier(str(path))
    assert loaded is not None and loaded.sha256 == digest and loaded.spec == spec
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    features = pd.DataFrame([_cell(), _cell(nc_ratio=0.3)], index=[1, 2])
    types = classify_cells(
        loaded,
        features,
        ClassifyConfig(),
        read=array_reader(image),
        centres_xy=np.array([[50.0, 50.0], [120.0, 100.0]]),
        source_pixel_size_um=0.3,
    )
    assert list(types.index) == [1, 2]
    assert set(types["cell_type"]) <= {"lymphocyte", "neutrophil", "blast"}
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_classifier(str(path))
    with pytest.raises(ModelError, match="unknown classifier"):
        load_classifier("no-such-classifier")


def test_classify_config_validates():
    with pytest.raises(ConfigError, match="blast_threshold"):
        ClassifyConfig(blast_threshold=0)
    with pytest.raises(ConfigError, match="blast_size_vs_rbc"):
        ClassifyConfig(blast_size_vs_rbc=(2.0, 1.0))


def _png(path, size=(60, 80)):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), 200, np.uint8))
    return path


def test_labelled_cells_of_every_layout(tmp_path):
    from smearscan.classifier_data import classify_layout, list_labelled
    from smearscan.train_data import DatasetError

    crops = tmp_path / "crops"
    _png(crops / "neutrophil" / "a.png")
    _png(crops / "lymphocyte" / "b.png")
    items = list_labelled(crops)
    assert classify_layout(crops) == "classes"
    assert [(i.path.name, i.points[0].label, i.centred) for i in items] == [
        ("b.png", "lymphocyte", True),
        ("a.png", "neutrophil", True),
    ]
    assert (items[0].points[0].x, items[0].points[0].y) == (39.5, 29.5)  # image centre

    table = tmp_path / "csv"
    _png(table / "f1.png")
    (table / "cells.csv").write_text(
        "image,x,y,cell_type\nf1.png,10,20,Monocyte\nf1.png,30,5,blast\n"
    )
    [item] = list_labelled(table)
    assert [(p.x, p.y, p.label) for p in item.points] == [(10, 20, "monocyte"), (30, 5, "blast")]
    (table / "cells.csv").write_text("image,x,y,cell_type\nf1.png,ten,20,monocyte\n")
    with pytest.raises(DatasetError, match="line 2"):
        list_labelled(table)

    one_cell = tmp_path / "one-cell"
    _png(one_cell / "images" / "001.png")
    _png(one_cell / "images" / "002.png")
    (one_cell / "labels.csv").write_text("image,cell_type\n001.png,basophil\n002.png,\n")
    [item] = list_labelled(one_cell)  # 002 is unlabelled
    assert item.centred and item.points[0].label == "basophil"

    allidb = tmp_path / "allidb"
    _png(allidb / "Im001_1.jpg")
    (allidb / "Im001_1.xyc").write_text("12 15\n40\t30\n")
    _png(allidb / "Im002_0.jpg")
    (allidb / "Im002_0.xyc").write_text("")
    [item] = list_labelled(allidb)  # the image without blasts has no labelled cell
    assert [(p.x, p.y, p.label) for p in item.points] == [(12, 15, "blast"), (40, 30, "blast")]

    yolo = tmp_path / "yolo"
    _png(yolo / "images" / "f.png", (100, 100))
    (yolo / "labels").mkdir()
    (yolo / "labels" / "f.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n")
    (yolo / "classes.txt").write_text("wbc\neosinophil\n")
    [item] = list_labelled(yolo)  # the untyped "wbc" box is skipped
    assert [(p.x, p.y, p.label) for p in item.points] == [(20.0, 20.0, "eosinophil")]

    with pytest.raises(DatasetError, match="no known layout"):
        list_labelled(_png(tmp_path / "loose" / "only.png").parent)


def test_training_is_seeded_and_learns_a_separable_set(tmp_path):
    from smearscan.classifier_data import CellSet
    from smearscan.classifier_training import ClassifierTrainConfig, train_classifier

    rng = np.random.default_rng(0)
    n = 40
    crops = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.array(["lymphocyte", "neutrophil"] * (n // 2))
    crops[labels == "neutrophil"] += 150  # bright vs dark crops
    features = np.full((n, 7), np.nan)
    cells = CellSet(crops, features, labels, np.array([f"set/{i}.png" for i in range(n)]),
                    np.ones(n, bool), 0.3)  # fmt: skip
    config = ClassifierTrainConfig(epochs=4, batch_size=8, width=4, levels=2, device="cpu")
    first = train_classifier(cells, config, tmp_path / "a")
    second = train_classifier(cells, config, tmp_path / "b")
    losses = [[r["train_loss"], r["val_loss"]] for r in first.history]
    assert losses == [[r["train_loss"], r["val_loss"]] for r in second.history]
    a = torch.load(tmp_path / "a" / "classifier.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "classifier.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.metrics["test_accuracy"] == 1.0
