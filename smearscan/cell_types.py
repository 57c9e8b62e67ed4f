"""The report's cell types and how training labels map onto them."""

from __future__ import annotations

#: Report cell types, in order (DESIGN.md's Cells contract).
CELL_TYPES: tuple[str, ...] = (
    "neutrophil",
    "lymphocyte",
    "monocyte",
    "eosinophil",
    "basophil",
    "blast",
    "other",
)

#: The five normal WBC types of the differential.
FIVE_PART: tuple[str, ...] = CELL_TYPES[:5]

#: Granulocytes: a cell the classifier calls one of these is not a blast.
GRANULOCYTES: tuple[str, ...] = ("neutrophil", "eosinophil", "basophil")

#: Training label (lower case) -> report type, for labels that are not report types
#: themselves; any other unknown label is reported as ``other``.
LABEL_ALIASES: dict[str, str] = {
    "band": "neutrophil",
    "segmented": "neutrophil",
    "bne": "neutrophil",
    "sne": "neutrophil",
    "neutrophils": "neutrophil",
    "lymphocytes": "lymphocyte",
    "monocytes": "monocyte",
    "eosinophils": "eosinophil",
    "basophils": "basophil",
    "lymphoblast": "blast",
    "myeloblast": "blast",
    "blasts": "blast",
    "ig": "other",
    "erythroblast": "other",
    "platelet": "other",
    "smudge": "other",
    "debris": "other",
}


def report_type(label: str) -> str:
    """The report type of a training label (``ig`` -> ``other``, ``myeloblast`` -> ``blast``)."""
    name = label.strip().lower()
    if name in CELL_TYPES:
        return name
    return LABEL_ALIASES.get(name, "other")
