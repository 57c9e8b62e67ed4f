"""Cell types from morphometric rules (a first differential; a trained classifier follows).

Each white cell gets a score per type from soft memberships of its
measurements in the ranges of DESIGN.md (sizes in µm, lobe counts, N:C
ratio, nucleus roundness, cytoplasm colour); the scores are normalised into
probabilities, the type is the most probable one and its probability is the
``type_confidence``. The blast rule is deliberately conservative (large
round nucleus filling more than 80 % of a cell at least 1.4 RBC diameters
across); ``blast_probability`` is the normalised blast score.

Memberships are trapezoids: 1 inside ``[lo, hi]``, falling linearly to 0 over
``soft`` beyond each end, so a cell slightly outside a textbook range still
scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Report cell types, in order.
CELL_TYPES: tuple[str, ...] = (
    "neutrophil",
    "lymphocyte",
    "monocyte",
    "eosinophil",
    "basophil",
    "blast",
    "other",
)

#: Score of "other": a cell that fits no type well ends up here.
OTHER_SCORE = 0.08
#: A cell is called a blast only when its blast probability reaches this.
BLAST_THRESHOLD = 0.5


def _trap(x: pd.Series, lo: float, hi: float, soft: float) -> np.ndarray:
    """Trapezoid membership of ``x`` in ``[lo, hi]`` with linear shoulders of width ``soft``."""
    v = x.to_numpy(dtype=np.float64)
    below = np.clip((v - (lo - soft)) / soft, 0, 1)
    above = np.clip(((hi + soft) - v) / soft, 0, 1)
    return np.nan_to_num(np.minimum(below, above), nan=0.0)


def _lobes(x: pd.Series, lo: int, hi: int) -> np.ndarray:
    v = x.to_numpy(dtype=np.float64)
    return np.where((v >= lo) & (v <= hi), 1.0, 0.15)


def type_scores(features: pd.DataFrame) -> pd.DataFrame:
    """Unnormalised scores per type, one row per cell.

    Args:
        features: Morphometry of :func:`smearscan.morphometry.measure_cells`.

    Returns:
        DataFrame with one float column per :data:`CELL_TYPES` entry.
    """
    d = features["equivalent_diameter_um"]
    nc = features["nc_ratio"]
    lobes = features["nucleus_lobes"]
    round_nucleus = _trap(features["nucleus_circularity"], 0.75, 1.0, 0.15)
    # Lab of the cytoplasm: eosinophil granules are orange-red (a*, b* high), basophil
    # granules dark purple (L* low); neutrophil cytoplasm pale lilac, lymphocyte blue.
    cyto_a = features["cytoplasm_mean_lab_a"]
    cyto_b = features["cytoplasm_mean_lab_b"]
    cyto_l = features["cytoplasm_mean_lab_l"]
    orange = _trap(cyto_b, 10.0, 80.0, 8.0) * _trap(cyto_a, 12.0, 80.0, 8.0)
    dark = _trap(cyto_l, 0.0, 45.0, 10.0)
    scores = {
        "neutrophil": _trap(d, 9.5, 13.0, 1.5) * _lobes(lobes, 2, 5) * (1 - orange) * (1 - dark),
        "eosinophil": _trap(d, 11.0, 17.0, 2.0) * _lobes(lobes, 2, 3) * orange,
        "basophil": _trap(d, 9.5, 14.0, 2.0) * dark,
        "lymphocyte": _trap(d, 6.5, 10.0, 1.5)
        * _lobes(lobes, 1, 1)
        * _trap(nc, 0.55, 1.0, 0.15)
        * round_nucleus
        * (1 - dark),
        "monocyte": _trap(d, 12.0, 20.0, 2.0)
        * _lobes(lobes, 1, 2)
        * _trap(nc, 0.3, 0.75, 0.15)
        * (1 - orange)
        * (1 - dark),
        "blast": _trap(features["size_vs_rbc"].fillna(d / 7.5), 1.4, 2.6, 0.2)
        * _lobes(lobes, 1, 1)
        * _trap(nc, 0.8, 1.0, 0.05)
        * round_nucleus
        * (1 - dark),
        "other": np.full(len(features), OTHER_SCORE),
    }
    return pd.DataFrame(scores, index=features.index)[list(CELL_TYPES)]


def classify_by_rules(features: pd.DataFrame) -> pd.DataFrame:
    """Cell type, confidence and blast probability for each measured cell.

    Args:
        features: Morphometry rows (see :func:`type_scores` for the columns used).

    Returns:
        DataFrame aligned with ``features``: ``cell_type`` (str), ``type_confidence``
        and ``blast_probability`` (float in [0, 1]), ``is_blast`` (bool).
    """
    if features.empty:
        return pd.DataFrame(
            {
                "cell_type": pd.Series(dtype=str),
                "type_confidence": pd.Series(dtype=float),
                "blast_probability": pd.Series(dtype=float),
                "is_blast": pd.Series(dtype=bool),
            }
        )
    scores = type_scores(features)
    probs = scores.div(scores.sum(axis=1), axis=0)
    blast_p = probs["blast"].to_numpy()
    cell_type = probs.idxmax(axis=1).to_numpy(dtype=object)
    is_blast = blast_p >= BLAST_THRESHOLD
    cell_type[is_blast] = "blast"
    cell_type[(~is_blast) & (cell_type == "blast")] = "other"
    return pd.DataFrame(
        {
            "cell_type": cell_type,
            "type_confidence": probs.max(axis=1).round(4).to_numpy(),
            "blast_probability": np.round(blast_p, 4),
            "is_blast": is_blast,
        },
        index=features.index,
    )
