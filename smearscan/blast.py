"""The blast score: what defines a blast morphologically, combined with the classifier.

``../shared/data`` (and most labs' training data) holds no blasts, so the
default blast score cannot be learnt; it is a rule on the cell's morphometry
(:mod:`smearscan.morphometry`), in the terms hematologists use (DESIGN.md):

* **large**: diameter against the median RBC of the slide (``size_vs_rbc``,
  or the diameter in µm / 7.5 µm when the slide has no RBCs) inside
  ``blast_size_vs_rbc`` (blasts 10-18 µm; a typical lymphocyte 7-10 µm is
  below the lower margin and never scores);
* **high N:C ratio**: nucleus area / cell area at least ``blast_min_nc_ratio``
  (scant cytoplasm);
* **round or oval nucleus**: nucleus circularity at least
  ``blast_min_nucleus_circularity`` and a single lobe;
* **not granulocyte-dark**: the cytoplasm is not as dark as basophil granules.

Each term is a soft membership (1 inside its range, falling linearly to 0
over its margin); the morphological score is their product. The classifier
then vetoes what it recognises as a granulocyte: ``score x (1 - veto ·
p(neutrophil + eosinophil + basophil))`` (a lymphocyte or monocyte
probability does not veto: a classifier that never saw a blast calls it one
of those); with ``--classifier rules`` there is no veto, the rule's own
lobe and cytoplasm terms being the rules' granulocyte evidence. When the
classifier has learnt a ``blast`` class from a lab's labelled blasts, the
blast probability is the larger of its calibrated ``p(blast)`` and the
morphological estimate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from smearscan.cell_types import GRANULOCYTES
from smearscan.classify_rules import trapezoid
from smearscan.config import ClassifyConfig

#: Nominal RBC diameter (µm) when a slide has no RBC to compare with.
RBC_DIAMETER_UM = 7.5


def _lower(x: pd.Series, lo: float, soft: float) -> np.ndarray:
    """Membership of "at least ``lo``": 1 from ``lo`` up, 0 below ``lo - soft``."""
    v = x.to_numpy(dtype=np.float64)
    return np.nan_to_num(np.clip((v - (lo - soft)) / soft, 0, 1), nan=0.0)


def morphology_score(features: pd.DataFrame, config: ClassifyConfig) -> np.ndarray:
    """Morphological blast score in [0, 1] of each cell.

    Args:
        features: Morphometry rows: ``size_vs_rbc``, ``equivalent_diameter_um``,
            ``nc_ratio``, ``nucleus_circularity``, ``nucleus_lobes``,
            ``cytoplasm_mean_lab_l``.
        config: Thresholds.

    Returns:
        float64 ``(N,)``; 0 for cells with missing measurements.
    """
    if features.empty:
        return np.zeros(0)
    size = features["size_vs_rbc"].astype(float)
    size = size.fillna(features["equivalent_diameter_um"].astype(float) / RBC_DIAMETER_UM)
    lo, hi = config.blast_size_vs_rbc
    large = trapezoid(size, lo, hi, config.blast_size_soft)
    high_nc = _lower(
        features["nc_ratio"].astype(float), config.blast_min_nc_ratio, config.blast_nc_soft
    )
    round_nucleus = _lower(
        features["nucleus_circularity"].astype(float),
        config.blast_min_nucleus_circularity,
        config.blast_circularity_soft,
    )
    one_lobe = np.where(features["nucleus_lobes"].to_numpy(dtype=np.float64) == 1, 1.0, 0.0)
    not_dark = 1.0 - trapezoid(features["cytoplasm_mean_lab_l"].astype(float), 0.0, 45.0, 10.0)
    return large * high_nc * round_nucleus * one_lobe * not_dark


def blast_probability(
    morphology: np.ndarray,
    type_probabilities: pd.DataFrame,
    config: ClassifyConfig,
    learned: np.ndarray | None = None,
) -> np.ndarray:
    """Blast probability of each cell from its morphology and the classifier.

    Args:
        morphology: ``(N,)`` scores of :func:`morphology_score`.
        type_probabilities: ``(N, types)`` classifier probabilities over report
            types (columns include :data:`~smearscan.cell_types.GRANULOCYTES`).
        config: ``granulocyte_veto``.
        learned: ``(N,)`` calibrated ``p(blast)`` of a classifier with a blast
            class, or None.

    Returns:
        float64 ``(N,)`` in [0, 1].
    """
    p_gran = type_probabilities[list(GRANULOCYTES)].sum(axis=1).to_numpy(dtype=np.float64)
    combined = morphology * (1.0 - config.granulocyte_veto * np.clip(p_gran, 0, 1))
    if learned is not None:
        combined = np.maximum(combined, learned)
    return np.clip(combined, 0.0, 1.0)
