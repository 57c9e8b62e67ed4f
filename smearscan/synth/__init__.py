"""Synthetic Romanowsky-stained peripheral blood smear fields with exact ground truth.

Deterministic (seeded) camera fields for tests and demos: red cells with a
pale centre, platelets, the five normal WBC types at their real sizes, a
per-field stain style, illumination falloff, optical blur and sensor noise;
on request blast-like cells (``generate_field(..., blasts=n)``, type
``"blast"``); plus a tiled BigTIFF writer for large-slide tests.

Example:
    >>> from smearscan.synth import generate_field
    >>> field = generate_field(seed=0, width=800, height=600, border_positions_px=(400,))
    >>> field.image.shape, bool(field.cells.max() == field.n_wbc)
    ((600, 800, 3), True)
"""

from smearscan.synth.blasts import BLAST_DIAMETER_UM, BLAST_MIN_NC_RATIO, BLAST_TYPE
from smearscan.synth.cells import CELL_TYPES, DIAMETER_RANGES_UM
from smearscan.synth.field import DEFAULT_BORDER_POSITIONS_PX, generate_field
from smearscan.synth.large import write_large_tiff
from smearscan.synth.smear import PLATELET_DIAMETER_UM, RBC_DIAMETER_UM
from smearscan.synth.stain import StainStyle
from smearscan.synth.storage import load_truth, truth_paths, write_field, write_sample_set
from smearscan.synth.truth import SynthField, WbcTruth

__all__ = [
    "BLAST_DIAMETER_UM",
    "BLAST_MIN_NC_RATIO",
    "BLAST_TYPE",
    "CELL_TYPES",
    "DEFAULT_BORDER_POSITIONS_PX",
    "DIAMETER_RANGES_UM",
    "PLATELET_DIAMETER_UM",
    "RBC_DIAMETER_UM",
    "StainStyle",
    "SynthField",
    "WbcTruth",
    "generate_field",
    "load_truth",
    "truth_paths",
    "write_field",
    "write_large_tiff",
    "write_sample_set",
]
