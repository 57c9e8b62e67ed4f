"""Blast-like cells (lymphoblast / myeloblast look) for the synthetic smear.

Blasts are opt-in (``generate_field(..., blasts=n)``): a normal field has none.
Their look follows DESIGN.md:

* cell 10-18 µm across (drawn 10.8-17.5 µm: 1.44-2.33 diameters of a 7.5 µm
  RBC), round or slightly oval;
* one round or slightly oval nucleus filling 84-91 % of the cell area (N:C
  ratio by area > 0.8), slightly off centre, leaving a thin rim of scant,
  deep-blue (basophilic) cytoplasm;
* fine, open, evenly stippled chromatin: paler and more homogeneous than a
  lymphocyte's dense, clumped chromatin (see ``_NUCLEUS_DENSITY`` and
  ``_CHROMATIN`` in :mod:`smearscan.synth.cells`);
* 1-3 pale nucleoli, 0.8-1.6 µm across;
* no granules, no vacuoles.

Only the geometry is planned here; :func:`smearscan.synth.cells.render_wbc`
renders a blast like any other WBC.
"""

from __future__ import annotations

import numpy as np

from smearscan.synth.cells import WbcShape
from smearscan.synth.shapes import star_points, star_radii

#: Cell type name of a blast (truth records and the ``Cells`` sheet).
BLAST_TYPE = "blast"
#: Blast (lymphoblast) diameter range of DESIGN.md, micrometres.
BLAST_DIAMETER_UM: tuple[float, float] = (10.0, 18.0)
#: Smallest nucleus / cell area ratio of a blast (DESIGN.md: N:C > 0.8).
BLAST_MIN_NC_RATIO = 0.8

#: Diameters actually drawn (µm): inside the range and at least 1.44 RBC diameters.
_DRAW_DIAMETER_UM = (10.8, 17.5)
#: Nucleus outline radius as a fraction of the cell outline radius (N:C ~ k**2).
_NUCLEUS_SCALE = (0.92, 0.95)
#: Number of nucleoli (inclusive range) and their radius range, micrometres.
_NUCLEOLI_COUNT = (1, 3)
_NUCLEOLUS_RADIUS_UM = (0.4, 0.8)
_N_ANGLES = 96
_MAX_NUCLEOLUS_TRIES = 50


def make_blast_shape(rng: np.random.Generator, pixel_size_um: float) -> WbcShape:
    """Draw the geometry of one blast.

    Args:
        rng: Random generator.
        pixel_size_um: Pixel size, micrometres per pixel.

    Returns:
        The cell's shape (pixels, relative to its centre), ``cell_type`` ``"blast"``.
    """
    diameter_um = float(rng.uniform(*_DRAW_DIAMETER_UM))
    r_px = diameter_um / 2.0 / pixel_size_um
    radii = r_px * star_radii(rng, _N_ANGLES, wobble=0.02, ellipticity=rng.uniform(0.0, 0.07))
    # The nucleus follows the cell outline (a thin, even rim), a touch irregular of its own.
    scale = float(rng.uniform(*_NUCLEUS_SCALE))
    own = star_radii(rng, _N_ANGLES, wobble=0.012, ellipticity=rng.uniform(0.0, 0.02))
    nuc_radii = np.minimum(scale * radii * own, radii - 1.5)
    rim_px = float((radii - nuc_radii).min())
    shift = rng.uniform(0.0, 0.45) * max(rim_px - 1.5, 0.0)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    nx, ny = shift * np.cos(direction), shift * np.sin(direction)
    nucleus = star_points(nx, ny, nuc_radii)
    nucleoli = _nucleoli(rng, nx, ny, 0.55 * float(nuc_radii.min()), pixel_size_um)
    return WbcShape(
        cell_type=BLAST_TYPE,
        diameter_um=diameter_um,
        radii_px=radii,
        nucleus_blobs=(nucleus,),
        nucleus_strands=(),
        strand_px=max(2, round(0.35 / pixel_size_um)),
        nucleus_cuts=(),
        n_lobes=1,
        granules=np.zeros((0, 3), np.float64),
        vacuoles=np.zeros((0, 3), np.float64),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        nucleoli=nucleoli,
    )


def _nucleoli(
    rng: np.random.Generator, cx: float, cy: float, reach_px: float, pixel_size_um: float
) -> np.ndarray:
    """1-3 non-overlapping nucleoli within ``reach_px`` of the nucleus centre.

    Returns:
        float64 ``(k, 3)``: nucleolus ``x, y, radius`` in pixels (cell centre origin).
    """
    n = int(rng.integers(_NUCLEOLI_COUNT[0], _NUCLEOLI_COUNT[1] + 1))
    r_lo, r_hi = (r / pixel_size_um for r in _NUCLEOLUS_RADIUS_UM)
    gap = 0.4 / pixel_size_um
    spots: list[tuple[float, float, float]] = []
    for _ in range(_MAX_NUCLEOLUS_TRIES):
        if len(spots) == n:
            break
        r = float(rng.uniform(r_lo, r_hi))
        rho = max(reach_px - r, 0.0) * np.sqrt(rng.random())
        ang = rng.uniform(0.0, 2.0 * np.pi)
        x, y = cx + rho * np.cos(ang), cy + rho * np.sin(ang)
        if all(np.hypot(x - sx, y - sy) >= r + sr + gap for sx, sy, sr in spots):
            spots.append((float(x), float(y), r))
    return np.array(spots, dtype=np.float64).reshape(-1, 3)
