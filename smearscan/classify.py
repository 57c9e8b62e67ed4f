"""Cell classifier: the differential and the blast score of every nucleated cell.

For each cell found by the cell stage, a crop centred on it at the
classifier's canonical scale and its morphometry vector
(:mod:`smearscan.cell_crops`) go into :class:`~smearscan.models.cellnet.CellNet`;
its temperature-scaled softmax gives probabilities over the classes it was
trained on, which are summed onto the report's types
(:data:`~smearscan.cell_types.CELL_TYPES`: ``ig``, ``erythroblast`` and
``platelet`` of PBC go to ``other``). The blast probability comes from
:mod:`smearscan.blast`. With ``--classifier rules`` the type probabilities come
from :mod:`smearscan.classify_rules` instead of a network.

A classifier file is one ``.pt`` (weights + :class:`ClassifierSpec` +
metadata, loadable with ``weights_only=True``) with a ``.pt.sha256`` sidecar,
checked before loading, like a segmentation checkpoint. The shipped one is
listed in :data:`SHIPPED_CLASSIFIERS`, its model card is
``smearscan/weights/CLASSIFIER_CARD.md``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from smearscan.blast import blast_probability, morphology_score
from smearscan.cell_crops import cut_crops, feature_matrix, normalise_crops
from smearscan.cell_types import CELL_TYPES, report_type
from smearscan.checkpoint import save_with_sidecar, verify_checkpoint
from smearscan.classify_rules import rule_type_probabilities
from smearscan.config import ClassifyConfig
from smearscan.errors import ModelError
from smearscan.models.cellnet import CellNet
from smearscan.registry import (  # noqa: F401  (re-exported)
    SHIPPED_CLASSIFIERS,
    available_classifiers,
    classifier_path,
)
from smearscan.resample import Reader

log = logging.getLogger(__name__)

#: ``payload["format"]`` of a classifier file.
CLASSIFIER_FORMAT = "smearscan-classifier"
CLASSIFIER_VERSION = 1
#: Crops per forward pass.
BATCH = 256


@dataclass(frozen=True)
class ClassifierSpec:
    """What a classifier needs to be built and fed.

    Attributes:
        classes: Training labels, in output order (lower case).
        crop_px: Crop side in pixels.
        crop_pixel_size_um: Crop scale in µm/px.
        features: Morphometry columns of its feature vector
            (:data:`~smearscan.cell_crops.FEATURES`).
        width: Channels of the first conv stage.
        levels: Conv stages.
        temperature: Softmax temperature fitted on validation data (1: uncalibrated).
        normalisation: How crops are scaled for the network
            (:data:`~smearscan.cell_crops.NORMALISATIONS`).
        metadata: Free information (training settings, date).
    """

    classes: tuple[str, ...]
    crop_px: int
    crop_pixel_size_um: float
    features: tuple[str, ...] = ()
    width: int = 16
    levels: int = 4
    temperature: float = 1.0
    normalisation: str = "scale"
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def build(self) -> CellNet:
        """A fresh network of this spec (random weights)."""
        return CellNet(len(self.classes), 2 * len(self.features), self.width, self.levels)

    @property
    def has_blast_class(self) -> bool:
        """Whether one of the classes maps to ``blast``."""
        return any(report_type(c) == "blast" for c in self.classes)


def save_classifier(path: Path, model: CellNet, spec: ClassifierSpec) -> str:
    """Write weights and spec to ``path`` and its sha256 sidecar; return the digest."""
    spec_dict = asdict(spec)
    spec_dict["classes"] = list(spec.classes)
    spec_dict["features"] = list(spec.features)
    payload = {
        "format": CLASSIFIER_FORMAT,
        "version": CLASSIFIER_VERSION,
        "spec": spec_dict,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return save_with_sidecar(Path(path), payload)


def _spec_from(payload: Mapping[str, Any], path: Path) -> ClassifierSpec:
    try:
        d = dict(payload["spec"])
        d["classes"] = tuple(d["classes"])
        d["features"] = tuple(d.get("features", ()))
        return ClassifierSpec(**d)
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{path}: bad classifier spec ({exc})") from exc


@dataclass
class CellClassifier:
    """A loaded classifier: network (eval mode), spec and file digest."""

    model: CellNet
    spec: ClassifierSpec
    sha256: str
    device: torch.device

    @torch.inference_mode()
    def probabilities(self, crops: np.ndarray, features: pd.DataFrame) -> np.ndarray:
        """Calibrated class probabilities ``(N, len(spec.classes))`` float64.

        Args:
            crops: uint8 ``(N, S, S, 3)`` at the spec's scale.
            features: ``N`` morphometry rows.
        """
        vectors = feature_matrix(features, self.spec.features)
        out = []
        for start in range(0, len(crops), BATCH):
            batch = normalise_crops(crops[start : start + BATCH], self.spec.normalisation)
            x = torch.from_numpy(batch).to(self.device)
            f = torch.from_numpy(vectors[start : start + BATCH]).to(self.device)
            logits = self.model(x, f if self.spec.features else None).float()
            out.append(torch.softmax(logits / self.spec.temperature, dim=1).cpu().numpy())
        return (
            np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(self.spec.classes)))
        )

    def type_probabilities(self, probs: np.ndarray) -> pd.DataFrame:
        """Class probabilities summed onto the report types, ``(N, len(CELL_TYPES))``."""
        frame = pd.DataFrame(0.0, index=range(len(probs)), columns=list(CELL_TYPES))
        for j, name in enumerate(self.spec.classes):
            frame[report_type(name)] += probs[:, j]
        return frame


def load_classifier(name: str, device: torch.device | str = "cpu") -> CellClassifier | None:
    """The classifier ``name`` (shipped name or ``PATH.pt``), or None for ``rules``.

    Raises:
        ModelError: Unknown name, missing file, sha256 mismatch or bad content.
    """
    if name == "rules":
        return None
    path, expected = classifier_path(name)
    digest = verify_checkpoint(path, expected)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read classifier ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CLASSIFIER_FORMAT:
        raise ModelError(f"{path}: not a smearscan classifier (no format {CLASSIFIER_FORMAT!r})")
    spec = _spec_from(payload, path)
    model = spec.build()
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise ModelError(f"{path}: weights do not match the classifier spec ({exc})") from exc
    device = torch.device(device)
    return CellClassifier(model.eval().to(device), spec, digest, device)


def empty_types() -> pd.DataFrame:
    """The columns of :func:`classify_cells` for no cell."""
    return pd.DataFrame(
        {
            "cell_type": pd.Series(dtype=str),
            "type_confidence": pd.Series(dtype=float),
            "blast_probability": pd.Series(dtype=float),
            "is_blast": pd.Series(dtype=bool),
        }
    )


def assign_types(type_probs: pd.DataFrame, blast_p: np.ndarray, threshold: float) -> pd.DataFrame:
    """Report type, confidence and blast call of each cell.

    A cell whose blast probability reaches ``threshold`` is a ``blast`` with that
    probability as its confidence; any other cell takes its most probable
    non-blast type, its confidence the probability of that type.
    """
    others = type_probs.drop(columns="blast")
    cell_type = np.array(others.idxmax(axis=1), dtype=object)  # writable copies
    confidence = np.array(others.max(axis=1), dtype=np.float64)
    is_blast = blast_p >= threshold
    cell_type[is_blast] = "blast"
    confidence[is_blast] = blast_p[is_blast]
    return pd.DataFrame(
        {
            "cell_type": cell_type,
            "type_confidence": np.round(confidence, 4),
            "blast_probability": np.round(blast_p, 4),
            "is_blast": is_blast,
        },
        index=type_probs.index,
    )


def classify_cells(
    classifier: CellClassifier | None,
    features: pd.DataFrame,
    config: ClassifyConfig,
    *,
    read: Reader | None = None,
    centres_xy: np.ndarray | None = None,
    source_pixel_size_um: float | None = None,
) -> pd.DataFrame:
    """Type every cell of a slide and score it for blasts.

    Args:
        classifier: A loaded classifier, or None for the rules.
        features: Morphometry, one row per cell (index = cell id).
        config: Blast thresholds.
        read: Reader of the source image (needed with a classifier).
        centres_xy: float ``(N, 2)`` source-pixel centroids, rows aligned with ``features``.
        source_pixel_size_um: Source pixel size.

    Returns:
        ``cell_type``, ``type_confidence``, ``blast_probability``, ``is_blast``
        indexed like ``features``.
    """
    if features.empty:
        return empty_types()
    crops = None
    if classifier is not None:
        if read is None or centres_xy is None or source_pixel_size_um is None:
            raise ValueError("a classifier needs the reader, centroids and pixel size")
        spec = classifier.spec
        crops = cut_crops(
            read, centres_xy, source_pixel_size_um, spec.crop_px, spec.crop_pixel_size_um
        )
    return type_cells(classifier, crops, features, config)


def type_cells(
    classifier: CellClassifier | None,
    crops: np.ndarray | None,
    features: pd.DataFrame,
    config: ClassifyConfig,
) -> pd.DataFrame:
    """Types and blast calls of cells whose crops are already cut.

    Args:
        classifier: A loaded classifier, or None for the rules.
        crops: uint8 ``(N, S, S, 3)`` at the classifier's scale (None for the rules).
        features: Morphometry, ``N`` rows.
        config: Blast thresholds.

    Returns:
        As :func:`classify_cells`, indexed like ``features``.
    """
    learned = None
    if classifier is None or crops is None:
        classifier = None
        type_probs = rule_type_probabilities(features)
        # The rules' granulocyte evidence (lobes, dark cytoplasm) is already part of
        # the blast rule: no second veto from the same measurements.
        config = dataclasses.replace(config, granulocyte_veto=0.0)
    else:
        type_probs = classifier.type_probabilities(classifier.probabilities(crops, features))
        type_probs.index = features.index
        if classifier.spec.has_blast_class:
            learned = type_probs["blast"].to_numpy(dtype=np.float64)
    blast_p = blast_probability(morphology_score(features, config), type_probs, config, learned)
    return assign_types(type_probs, blast_p, config.blast_threshold)
