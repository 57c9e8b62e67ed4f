"""Cell types from morphometric rules: the ``--classifier rules`` option (no network).

Each white cell gets a score per type from soft memberships of its
measurements in the ranges of DESIGN.md (sizes in µm, lobe counts, N:C
ratio, nucleus roundness, cytoplasm colour); the scores are normalised into
probabilities over the report types. Blasts are not scored here: the
morphological blast rule of :mod:`smearscan.blast` applies to every
classifier, this one included.

Memberships are trapezoids: 1 inside ``[lo, hi]``, falling linearly to 0 over
``soft`` beyond each end, so a cell slightly outside a textbook range still
scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from smearscan.cell_types import CELL_TYPES

#: Score of "other": a cell that fits no type well ends up here.
OTHER_SCORE = 0.08


def trapezoid(x: pd.Series, lo: float, hi: float, soft: float) -> np.ndarray:
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
    round_nucleus = trapezoid(features["nucleus_circularity"], 0.75, 1.0, 0.15)
    # Lab of the cytoplasm: eosinophil granules are orange-red (a*, b* high), basophil
    # granules dark purple (L* low); neutrophil cytoplasm pale lilac, lymphocyte blue.
    cyto_a = features["cytoplasm_mean_lab_a"]
    cyto_b = features["cytoplasm_mean_lab_b"]
    cyto_l = features["cytoplasm_mean_lab_l"]
    orange = trapezoid(cyto_b, 10.0, 80.0, 8.0) * trapezoid(cyto_a, 12.0, 80.0, 8.0)
    dark = trapezoid(cyto_l, 0.0, 45.0, 10.0)
    scores = {
        "neutrophil": trapezoid(d, 9.5, 13.0, 1.5)
        * _lobes(lobes, 2, 5)
        * (1 - orange)
        * (1 - dark),
        "eosinophil": trapezoid(d, 11.0, 17.0, 2.0) * _lobes(lobes, 2, 3) * orange,
        "basophil": trapezoid(d, 9.5, 14.0, 2.0) * dark,
        "lymphocyte": trapezoid(d, 6.5, 10.0, 1.5)
        * _lobes(lobes, 1, 1)
        * trapezoid(nc, 0.55, 1.0, 0.15)
        * round_nucleus
        * (1 - dark),
        "monocyte": trapezoid(d, 12.0, 20.0, 2.0)
        * _lobes(lobes, 1, 2)
        * trapezoid(nc, 0.3, 0.75, 0.15)
        * (1 - orange)
        * (1 - dark),
        "blast": np.zeros(len(features)),  # scored by smearscan.blast
        "other": np.full(len(features), OTHER_SCORE),
    }
    return pd.DataFrame(scores, index=features.index)[list(CELL_TYPES)]


def rule_type_probabilities(features: pd.DataFrame) -> pd.DataFrame:
    """Probability of each report type from the rules (``blast`` is 0: see :mod:`smearscan.blast`).

    Args:
        features: Morphometry rows (see :func:`type_scores` for the columns used).

    Returns:
        float DataFrame aligned with ``features``, one column per :data:`CELL_TYPES`
        entry, rows summing to 1.
    """
    if features.empty:
        return pd.DataFrame({t: pd.Series(dtype=float) for t in CELL_TYPES})
    scores = type_scores(features)
    return scores.div(scores.sum(axis=1), axis=0)
