"""Is the pixel size a slide was processed at plausible? Judged from its cells.

Every length and area smearscan reports is in µm at the slide's pixel size
(given, from the file, from a camera profile or estimated from the RBCs by
:mod:`smearscan.scale`). :func:`scale_problem` compares the cells of a
slide, measured after segmentation at the chosen scale, with physiological
ranges: the median RBC diameter when there are at least :data:`MIN_RBCS`
red cells, the median whole-cell and nucleus areas of the WBCs when there is
at least :data:`MIN_WBCS` white cell, and the largest WBC and nucleus.

At ``k`` times the true µm/px cells do not simply measure ``k`` times their
size: the model sees them ``k`` times larger than it was trained for and
segments them otherwise (``benchmarks/scale_guard.py``: 300 real fields at
x0.5, x1, x2, x6.7). At x6.7 a cell comes out as one giant among fragments of
ordinary size and the RBC median *shrinks* to ~4.4 µm; at x2 RBCs with pale
centres become ring-nucleated "WBCs" of plausible size; at x0.5 WBCs shrink
to the size of small lymphocytes. So the guard catches a pixel size several
times too large (88 % of the fields at x6.7, 24 % at x2), not one too small,
and gives a factor only when the RBCs read too large. The ranges are wide on
purpose: a correct scale must pass on real smears (crowded fields, clumps,
few RBCs, WBC-only crops, a huge monocyte, macro- and microcytes,
segmentation errors): 0 of the 300 fields at x1 fail.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from typing import Any

from smearscan.errors import ScaleEstimationError
from smearscan.results import SlideResult

log = logging.getLogger(__name__)

#: Nominal RBC diameter, µm (DESIGN.md "Domain facts": RBC 7-8 µm); the factor
#: a pixel size looks off by is the measured median over this.
RBC_NOMINAL_DIAMETER_UM = 7.5

#: Plausible median RBC diameter of a field, µm, as the cell stage measures it
#: (twice the median inscribed radius of the RBC mask, so clumps and pale
#: centres read a little small). Physiology: 7-8 µm (DESIGN.md), 6 µm in
#: marked microcytosis, up to ~10 µm in megaloblastic anaemia. Margins set
#: on the real data at the true pixel size (benchmarks/scale_guard.py).
#: Widened to half and twice the nominal 7.5 µm after txl-pbc/val at its pooled
#: (right) pixel sizes gave BCD fields a segmented median of 13.1 µm (n=8): clumps
#: of red cells read as one (benchmarks/calibration_batch.py txl). scale_guard.py,
#: true pixel size, >= 20 RBCs: 6.5-9.1 µm; x6.7 reads 4.4 µm (fragments): 4.5
#: would catch 2.6 % more, left at 3.75 for microcytic smears (none in the data).
RBC_DIAMETER_RANGE_UM = (3.75, 15.0)

MIN_RBCS = 20  # fewest RBCs for their median to count (a few clumped ones misled at 5)

#: No single white cell (or clump taken as one) covers this much, µm² (a 56 µm
#: disc, about three times the largest monocyte): one that does gives a pixel size
#: several times too large away, whatever the median (the model breaks an
#: over-magnified cell into fragments of plausible size around one giant).
#: scale_guard.py: the largest at the true pixel size 511 µm² (a basophil of
#: pbc-cells), at x6.7 a median of 4251 µm² (77 % of the fields over the limit).
MAX_WBC_AREA_UM2 = 2500.0
#: No single nucleus covers this much, µm² (a 39 µm disc); scale_guard.py: the
#: largest at the true pixel size 182 µm², at x6.7 a median of 2680 µm².
MAX_NUCLEUS_AREA_UM2 = 1200.0

#: Plausible median whole-cell WBC area of a field, µm². Physiology: 7-20 µm
#: across (DESIGN.md: small lymphocyte 7-10, monocyte 12-20 µm), 38-314 µm²
#: as discs; wider for flattened cells, missed cytoplasm (cell ~ nucleus) and
#: clumps taken as one cell. scale_guard.py at the true pixel size: field
#: medians 49-512 µm² (p95 427); at x2 median 454, p95 1137. The lower bound is
#: the cell stage's own smallest cell (cells.min_cell_area_um2): at x0.5 the
#: medians (28-168 µm²) overlap those of small lymphocytes, so none can tell.
WBC_AREA_RANGE_UM2 = (20.0, 700.0)

#: Plausible median WBC nucleus area of a field, µm². Physiology: a small
#: lymphocyte's nucleus ~6-7 µm (~30 µm²) up to a monocyte's or a blast's
#: ~15 µm (~180 µm²). scale_guard.py at the true pixel size: field medians
#: 11-182 µm² (p95 140); at x2 median 175, p95 503. Lower bound: the cell
#: stage's smallest nucleus (cells.min_nucleus_area_um2).
NUCLEUS_AREA_RANGE_UM2 = (10.0, 400.0)

MIN_WBCS = 1  # fewest WBCs for their median areas to count as evidence

#: What a lab does about a wrong pixel size (the end of every message).
ADVICE = "pass --pixel-size or add a camera profile ([[scale.cameras]] in the config)"


@dataclass(frozen=True)
class ScaleEvidence:
    """What a slide's cells say about the pixel size it was processed at.

    Attributes:
        pixel_size_um: Source µm/px the slide was processed at (NaN when none:
            a field without a smear).
        rbc_diameter_um: Median RBC diameter found by the cell stage, µm, or None.
        rbc_count: RBCs found (the ``n`` of that median).
        wbc_area_um2: Median whole-cell area of the WBCs, µm², or None.
        nucleus_area_um2: Median nucleus area of the WBCs, µm², or None.
        wbc_count: WBCs those medians are over.
        largest_wbc_area_um2: The largest WBC's whole-cell area, µm², or None.
        largest_nucleus_area_um2: The largest nucleus area, µm², or None.
        pixel_size_method: How the pixel size was obtained (for messages; may be "").
    """

    pixel_size_um: float
    rbc_diameter_um: float | None
    rbc_count: int
    wbc_area_um2: float | None
    nucleus_area_um2: float | None
    wbc_count: int
    pixel_size_method: str = ""
    largest_wbc_area_um2: float | None = None
    largest_nucleus_area_um2: float | None = None


class ImplausibleScaleError(ScaleEstimationError):
    """A slide's cells measure far outside physiological sizes at its pixel size.

    Args:
        message: What was measured and what to do (:func:`scale_problem`).
        evidence: The evidence judged.
    """

    def __init__(self, message: str, evidence: ScaleEvidence) -> None:
        self.evidence = evidence
        super().__init__(message)


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _median(values: list[Any]) -> float | None:
    finite = _finite(values)
    return statistics.median(finite) if finite else None


def evidence_from_result(result: SlideResult, rbc_diameter_um: float | None) -> ScaleEvidence:
    """The evidence of a slide after its cell stage.

    Args:
        result: The slide's result: ``pixel_size_um``, ``rbc_count`` and the
            Cells rows (``area_um2``, ``nucleus_area_um2``, ``touches_edge``).
        rbc_diameter_um: Median RBC diameter, µm (what
            :func:`smearscan.cells.run_cell_stage` returns), or None.

    Returns:
        The evidence; WBC medians are over the cells not cut by the border
        when there are any (a cut cell measures small), else over all.
    """
    whole = [c for c in result.cells if not c.get("touches_edge", False)]
    cells = whole or result.cells
    pixel_size = result.pixel_size_um
    return ScaleEvidence(
        pixel_size_um=math.nan if pixel_size is None else float(pixel_size),
        rbc_diameter_um=rbc_diameter_um,
        rbc_count=int(result.rbc_count or 0),
        wbc_area_um2=_median([c.get("area_um2") for c in cells]),
        nucleus_area_um2=_median([c.get("nucleus_area_um2") for c in cells]),
        wbc_count=len(cells),
        pixel_size_method=result.pixel_size_method,
        largest_wbc_area_um2=_largest([c.get("area_um2") for c in result.cells]),
        largest_nucleus_area_um2=_largest([c.get("nucleus_area_um2") for c in result.cells]),
    )


def _largest(values: list[Any]) -> float | None:
    finite = _finite(values)
    return max(finite) if finite else None


def _outside(value: float | None, bounds: tuple[float, float]) -> bool:
    return value is not None and not bounds[0] <= value <= bounds[1]


def _findings(evidence: ScaleEvidence) -> tuple[list[str], bool]:
    """The implausible measurements as phrases, and whether the RBCs are among them."""
    found = []
    rbc_bad = evidence.rbc_count >= MIN_RBCS and _outside(
        evidence.rbc_diameter_um, RBC_DIAMETER_RANGE_UM
    )
    if rbc_bad:
        lo, hi = RBC_DIAMETER_RANGE_UM
        found.append(
            f"the median red cell is {evidence.rbc_diameter_um:.1f} µm across "
            f"(n={evidence.rbc_count}; red cells are {lo:g}-{hi:g} µm)"
        )
    if evidence.wbc_count >= MIN_WBCS:
        for name, plural, value, bounds in (
            ("white cell", "white cells", evidence.wbc_area_um2, WBC_AREA_RANGE_UM2),
            ("nucleus", "nuclei", evidence.nucleus_area_um2, NUCLEUS_AREA_RANGE_UM2),
        ):
            if _outside(value, bounds):
                found.append(
                    f"the median {name} {value:.0f} µm² (n={evidence.wbc_count}; "
                    f"{plural} are {bounds[0]:g}-{bounds[1]:g} µm²)"
                )
    for name, value, limit in (
        ("white cell", evidence.largest_wbc_area_um2, MAX_WBC_AREA_UM2),
        ("nucleus", evidence.largest_nucleus_area_um2, MAX_NUCLEUS_AREA_UM2),
    ):
        if value is not None and value > limit:
            found.append(f"the largest {name} {value:.0f} µm² (none is over {limit:g} µm²)")
    return found, rbc_bad


def scale_problem(evidence: ScaleEvidence) -> str | None:
    """Why the pixel size looks wrong, or None when the cells find it plausible.

    None too when there is too little evidence to tell: fewer than
    :data:`MIN_RBCS` RBCs (or no diameter) and fewer than :data:`MIN_WBCS`
    WBCs (or no areas). A slide passes unless one of the medians lies outside
    its range (:data:`RBC_DIAMETER_RANGE_UM`, :data:`WBC_AREA_RANGE_UM2`,
    :data:`NUCLEUS_AREA_RANGE_UM2`) or its largest WBC or nucleus is over
    :data:`MAX_WBC_AREA_UM2` or :data:`MAX_NUCLEUS_AREA_UM2`.

    Returns:
        What was measured at which pixel size, which way the pixel size looks
        off, by what factor when the RBCs read too large (median over
        :data:`RBC_NOMINAL_DIAMETER_UM`; the other findings give none, see the
        module docstring), and what to do.
    """
    found, rbc_bad = _findings(evidence)
    if not found:
        return None
    how = f" ({evidence.pixel_size_method})" if evidence.pixel_size_method else ""
    message = f"at {evidence.pixel_size_um:.3g} µm/px{how} " + " and ".join(found)
    factor = (evidence.rbc_diameter_um or 0.0) / RBC_NOMINAL_DIAMETER_UM if rbc_bad else 0.0
    if factor > 1:
        message += (
            f": the pixel size looks about {factor:.1f}x too large (the red cells fit about "
            f"{evidence.pixel_size_um / factor:.3g} µm/px)"
        )
    else:  # every other finding comes from too large a pixel size (scale_guard.py)
        message += (
            ": the pixel size looks wrong, most likely too large (cells magnified past the "
            "model's scale come out as giants and small fragments: no factor can be read off)"
        )
    return f"{message}; {ADVICE}"


def check_scale(evidence: ScaleEvidence) -> None:
    """Raise when the cells find the pixel size implausible (:func:`scale_problem`).

    Raises:
        ImplausibleScaleError: With the message of :func:`scale_problem` and the evidence.
    """
    problem = scale_problem(evidence)
    if problem is not None:
        log.debug("implausible scale: %s", evidence)
        raise ImplausibleScaleError(problem, evidence)
