"""White blood cells of the synthetic smear: shapes and rendering.

A WBC is planned once as a position-independent :class:`WbcShape` (outline,
nucleus lobes and strands, granules, nucleoli, all relative to the cell
centre in pixels) and then rendered at any sub-pixel centre by :func:`render_wbc`, which
returns the exact truth masks and the optical density of the cell. Keeping the
two apart lets the field layout move a cell (to make two cells touch) without
changing its appearance.

The normal types are drawn here; blast-like cells (opt-in) are planned by
:mod:`smearscan.synth.blasts` and rendered by the same :func:`render_wbc`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil, floor

import cv2
import numpy as np

from smearscan.synth.shapes import (
    draw_discs,
    draw_polyline,
    ellipse_points,
    fill_polygon,
    smooth_noise,
    star_points,
    star_radii,
)
from smearscan.synth.stain import StainStyle

#: Normal WBC types the generator draws (names of the ``Cells`` sheet). Blasts
#: (``"blast"``, :mod:`smearscan.synth.blasts`) are planted only on request.
CELL_TYPES: tuple[str, ...] = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")

#: Cell diameter ranges of DESIGN.md (normal types), micrometres.
DIAMETER_RANGES_UM: dict[str, tuple[float, float]] = {
    "neutrophil": (10.0, 12.0),
    "lymphocyte": (7.0, 10.0),
    "monocyte": (12.0, 20.0),
    "eosinophil": (12.0, 17.0),
    "basophil": (10.0, 14.0),
}

#: Normal adult differential (fractions) used to draw cell types.
TYPE_WEIGHTS: dict[str, float] = {
    "neutrophil": 0.55,
    "lymphocyte": 0.30,
    "monocyte": 0.07,
    "eosinophil": 0.05,
    "basophil": 0.03,
}

#: Diameters are drawn this far (µm) inside the ranges so pixelisation stays in range.
_RANGE_MARGIN_UM = 0.3
#: Monocytes above this diameter (µm) are rare; the generator stays below it.
_MONOCYTE_MAX_UM = 18.0
_N_ANGLES = 96


@dataclass(frozen=True)
class WbcShape:
    """Position-independent geometry of one WBC, in pixels relative to its centre.

    Attributes:
        cell_type: One of :data:`CELL_TYPES`.
        diameter_um: Nominal diameter (equivalent circle), micrometres.
        radii_px: float64 ``(n,)``: outline radius at angles ``2*pi*k/n``, pixels.
        nucleus_blobs: Polygons ``(m, 2)`` (``x, y`` pixels) filled as nucleus.
        nucleus_strands: Polylines ``(m, 2)`` drawn as thin chromatin strands.
        strand_px: Thickness of the strands (and horseshoe nuclei), pixels.
        nucleus_cuts: Polygons removed from the nucleus (kidney indentation).
        n_lobes: Number of nucleus lobes.
        granules: float64 ``(k, 3)``: granule ``x, y, radius`` in pixels.
        vacuoles: float64 ``(k, 3)``: vacuole ``x, y, radius`` in pixels.
        texture_seed: Seed of the chromatin / cytoplasm texture.
        nucleoli: float64 ``(k, 3)``: nucleolus ``x, y, radius`` in pixels (pale
            spots inside the nucleus; only blasts have any).
    """

    cell_type: str
    diameter_um: float
    radii_px: np.ndarray
    nucleus_blobs: tuple[np.ndarray, ...]
    nucleus_strands: tuple[np.ndarray, ...]
    strand_px: int
    nucleus_cuts: tuple[np.ndarray, ...]
    n_lobes: int
    granules: np.ndarray
    vacuoles: np.ndarray
    texture_seed: int
    nucleoli: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float64))

    @property
    def max_radius_px(self) -> float:
        """Largest outline radius, pixels."""
        return float(self.radii_px.max())


@dataclass
class WbcPatch:
    """One rendered WBC in a local window of the image.

    Attributes:
        x0: Image column of the window's first column (may be negative).
        y0: Image row of the window's first row (may be negative).
        cell: bool ``(h, w)``: the whole cell (cytoplasm and nucleus).
        nucleus: bool ``(h, w)``: the nucleus, a subset of ``cell``.
        od: float32 ``(h, w, 3)``: optical density of the cell (0 outside it).
    """

    x0: int
    y0: int
    cell: np.ndarray
    nucleus: np.ndarray
    od: np.ndarray = field(repr=False)


def draw_cell_types(rng: np.random.Generator, n: int) -> list[str]:
    """Cell types of ``n`` WBCs: every type once (when ``n >= 5``), then by the differential.

    Args:
        rng: Random generator.
        n: Number of cells.

    Returns:
        ``n`` names from :data:`CELL_TYPES`, in random order.
    """
    guaranteed = list(CELL_TYPES[: min(n, len(CELL_TYPES))])
    p = np.array([TYPE_WEIGHTS[t] for t in CELL_TYPES])
    extra = rng.choice(len(CELL_TYPES), size=n - len(guaranteed), p=p / p.sum())
    types = guaranteed + [CELL_TYPES[int(i)] for i in extra]
    order = rng.permutation(n)
    return [types[int(i)] for i in order]


def make_wbc_shape(rng: np.random.Generator, cell_type: str, pixel_size_um: float) -> WbcShape:
    """Draw the geometry of one WBC of a given type.

    Args:
        rng: Random generator.
        cell_type: One of :data:`CELL_TYPES`.
        pixel_size_um: Pixel size, micrometres per pixel.

    Returns:
        The cell's shape (pixels, relative to its centre).
    """
    lo, hi = DIAMETER_RANGES_UM[cell_type]
    if cell_type == "monocyte":
        hi = _MONOCYTE_MAX_UM
    diameter_um = float(rng.uniform(lo + _RANGE_MARGIN_UM, hi - _RANGE_MARGIN_UM))
    r_px = diameter_um / 2.0 / pixel_size_um
    radii = r_px * star_radii(rng, _N_ANGLES, wobble=0.025, ellipticity=rng.uniform(0.0, 0.05))
    strand_px = max(2, round(0.35 / pixel_size_um))
    builder = _NUCLEUS_BUILDERS[cell_type]
    blobs, strands, cuts, n_lobes = builder(rng, r_px, pixel_size_um, strand_px)
    granules, vacuoles = _granules(rng, cell_type, r_px, pixel_size_um)
    return WbcShape(
        cell_type=cell_type,
        diameter_um=diameter_um,
        radii_px=radii,
        nucleus_blobs=tuple(blobs),
        nucleus_strands=tuple(strands),
        strand_px=strand_px,
        nucleus_cuts=tuple(cuts),
        n_lobes=n_lobes,
        granules=granules,
        vacuoles=vacuoles,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


_NucleusParts = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], int]


def _lobe_chain(
    rng: np.random.Generator,
    r_px: float,
    n: int,
    lobe_frac: float,
    ps: float,
) -> _NucleusParts:
    """Lobes on an arc around the centre, joined by thin strands along the arc."""
    a_base = r_px * lobe_frac
    spacing = 1.9 * a_base + rng.uniform(0.35, 0.9) / ps
    rho = min(0.5 * r_px, max(0.3 * r_px, (n - 1) * spacing / (1.4 * np.pi)))
    step = spacing / rho * (1.0 if rng.random() < 0.5 else -1.0)
    start = rng.uniform(0.0, 2.0 * np.pi)
    off = rng.normal(0.0, 0.04 * r_px, size=2)
    angles = start + step * np.arange(n)
    centres = np.stack([off[0] + rho * np.cos(angles), off[1] + rho * np.sin(angles)], axis=1)
    blobs = []
    for (x, y), ang in zip(centres, angles, strict=True):
        a = a_base * rng.uniform(0.85, 1.1)
        b = a * rng.uniform(0.72, 0.95)
        tilt = ang + np.pi / 2 + rng.uniform(-0.4, 0.4)
        wob = star_radii(rng, 48, wobble=0.05, ellipticity=0.0)
        blobs.append(ellipse_points(x, y, a, b, tilt, wobble=wob))
    strands = []
    for i in range(n - 1):
        t = np.linspace(angles[i], angles[i + 1], 6)
        strands.append(np.stack([off[0] + rho * np.cos(t), off[1] + rho * np.sin(t)], axis=1))
    return blobs, strands, [], n


def _neutrophil(rng: np.random.Generator, r_px: float, ps: float, strand_px: int) -> _NucleusParts:
    """Neutrophil: 2-5 lobes on an arc joined by strands."""
    n = int(rng.choice([2, 3, 4, 5], p=[0.2, 0.4, 0.3, 0.1]))
    return _lobe_chain(rng, r_px, n, lobe_frac=0.3 - 0.02 * (n - 2), ps=ps)


def _eosinophil(rng: np.random.Generator, r_px: float, ps: float, strand_px: int) -> _NucleusParts:
    """Eosinophil: usually 2 (sometimes 3) large lobes."""
    n = 2 if rng.random() < 0.85 else 3
    return _lobe_chain(rng, r_px, n, lobe_frac=0.28, ps=ps)


def _basophil(rng: np.random.Generator, r_px: float, ps: float, strand_px: int) -> _NucleusParts:
    """Basophil: a bilobed or irregular blob (later hidden by granules)."""
    if rng.random() < 0.5:
        return _lobe_chain(rng, r_px, 2, lobe_frac=0.28, ps=ps)
    a = r_px * rng.uniform(0.42, 0.52)
    wob = star_radii(rng, 64, wobble=0.12, ellipticity=0.0)
    off = rng.normal(0.0, 0.05 * r_px, size=2)
    blob = ellipse_points(off[0], off[1], a, a * rng.uniform(0.7, 0.9), rng.uniform(0, np.pi), wob)
    return [blob], [], [], 1


def _lymphocyte(rng: np.random.Generator, r_px: float, ps: float, strand_px: int) -> _NucleusParts:
    """Lymphocyte: one round nucleus filling most of the cell, often eccentric."""
    a = r_px * rng.uniform(0.72, 0.84)
    b = a * rng.uniform(0.86, 1.0)
    shift = (r_px - a) * rng.uniform(0.0, 0.8)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    wob = star_radii(rng, 64, wobble=0.03, ellipticity=0.0)
    cx, cy = shift * np.cos(direction), shift * np.sin(direction)
    return [ellipse_points(cx, cy, a, b, rng.uniform(0, np.pi), wob)], [], [], 1


def _monocyte(rng: np.random.Generator, r_px: float, ps: float, strand_px: int) -> _NucleusParts:
    """Monocyte: a kidney-shaped (indented) or folded horseshoe nucleus."""
    orient = rng.uniform(0.0, 2.0 * np.pi)
    off = rng.normal(0.0, 0.06 * r_px, size=2)
    if rng.random() < 0.6:  # kidney: an ellipse with an indentation on one side
        a = r_px * rng.uniform(0.5, 0.62)
        b = a * rng.uniform(0.62, 0.8)
        wob = star_radii(rng, 64, wobble=0.06, ellipticity=0.0)
        blob = ellipse_points(off[0], off[1], a, b, orient, wob)
        dist = b * rng.uniform(0.95, 1.15)
        cut_x = off[0] - dist * np.sin(orient)
        cut_y = off[1] + dist * np.cos(orient)
        cut = ellipse_points(cut_x, cut_y, a * 0.55, b * rng.uniform(0.5, 0.65), orient, n=48)
        return [blob], [], [cut], 1
    # folded / horseshoe: a thick band along an arc
    rho = r_px * rng.uniform(0.32, 0.4)
    span = rng.uniform(np.pi, 1.45 * np.pi)
    t = np.linspace(orient, orient + span, 24)
    path = np.stack([off[0] + rho * np.cos(t), off[1] + rho * np.sin(t)], axis=1)
    half = r_px * rng.uniform(0.17, 0.22)
    blobs = [ellipse_points(x, y, half, half * 0.92, 0.0, n=24) for x, y in path]
    return blobs, [], [], 1


_NUCLEUS_BUILDERS = {
    "neutrophil": _neutrophil,
    "lymphocyte": _lymphocyte,
    "monocyte": _monocyte,
    "eosinophil": _eosinophil,
    "basophil": _basophil,
}

#: Granule radius range (µm) and area coverage per cell type (0 = none).
_GRANULES: dict[str, tuple[float, float, float]] = {
    "neutrophil": (0.12, 0.18, 0.22),
    "lymphocyte": (0.15, 0.2, 0.0),
    "monocyte": (0.12, 0.16, 0.06),
    "eosinophil": (0.22, 0.3, 0.85),
    "basophil": (0.35, 0.6, 0.4),
}


def _granules(
    rng: np.random.Generator, cell_type: str, r_px: float, ps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Granules and vacuoles uniformly scattered over the cell disc (pixels)."""
    r_lo, r_hi, coverage = _GRANULES[cell_type]
    mean_r = 0.5 * (r_lo + r_hi) / ps
    count = int(coverage * (r_px / mean_r) ** 2)
    granules = _scatter(rng, count, r_px, r_lo / ps, r_hi / ps)
    n_vac = int(rng.integers(0, 7)) if cell_type == "monocyte" else 0
    vacuoles = _scatter(rng, n_vac, 0.8 * r_px, 0.3 / ps, 0.7 / ps)
    return granules, vacuoles


def _scatter(
    rng: np.random.Generator, n: int, radius: float, r_lo: float, r_hi: float
) -> np.ndarray:
    """``n`` discs uniformly distributed in a disc of ``radius``: ``(n, 3)`` x, y, r."""
    rad = radius * np.sqrt(rng.random(n))
    ang = rng.uniform(0.0, 2.0 * np.pi, n)
    sizes = rng.uniform(r_lo, r_hi, n)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang), sizes], axis=1).reshape(n, 3)


def _masks(shape: WbcShape, h: int, w: int, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact uint8 cell and nucleus masks of a shape in an ``(h, w)`` window."""
    cell = np.zeros((h, w), np.uint8)
    fill_polygon(cell, star_points(0.0, 0.0, shape.radii_px), dx, dy)
    nucleus = np.zeros((h, w), np.uint8)
    for blob in shape.nucleus_blobs:
        fill_polygon(nucleus, blob, dx, dy)
    for strand in shape.nucleus_strands:
        draw_polyline(nucleus, strand, shape.strand_px, dx, dy)
    for cut in shape.nucleus_cuts:
        hole = np.zeros((h, w), np.uint8)
        fill_polygon(hole, cut, dx, dy)
        nucleus[hole > 0] = 0
    # keep at least a one-pixel rim of cytoplasm around the nucleus
    nucleus[cv2.erode(cell, np.ones((3, 3), np.uint8)) == 0] = 0
    return cell, nucleus


#: Nucleus density (relative to the style's nucleus colour) per cell type.
_NUCLEUS_DENSITY = {
    "neutrophil": 1.0,
    "lymphocyte": 1.1,
    "monocyte": 0.72,
    "eosinophil": 0.9,
    "basophil": 0.85,
    "blast": 0.78,  # fine open chromatin: paler than a lymphocyte's dense nucleus
}

#: Chromatin texture per type: (correlation length µm, relative amplitude). The
#: default is coarse, clumped chromatin; blasts have fine, even stippling.
_CHROMATIN: dict[str, tuple[float, float]] = {"blast": (0.12, 0.1)}
_DEFAULT_CHROMATIN = (0.25, 0.25)
#: Blast cytoplasm: the lymphocyte's blue, deeper (scant, strongly basophilic).
_BLAST_CYTOPLASM_SCALE = 1.5
#: Fraction of the nucleus density missing at the centre of a nucleolus.
_NUCLEOLUS_PALLOR = 0.55
#: Share of the cytoplasm's blue added in a nucleolus (nucleoli look pale blue-lilac).
_NUCLEOLUS_TINT = 0.4


def cytoplasm_od(cell_type: str, style: StainStyle) -> np.ndarray:
    """Optical density ``(3,)`` (float32) of a cell type's cytoplasm at unit density."""
    if cell_type == "blast":
        return _BLAST_CYTOPLASM_SCALE * style.optical_density("lymphocyte_cytoplasm")
    return style.optical_density(f"{cell_type}_cytoplasm")


def _granule_od(cell_type: str, style: StainStyle) -> np.ndarray:
    """Optical density ``(3,)`` of one fully covered granule pixel."""
    if cell_type == "eosinophil":
        return style.optical_density("eosinophil_granules")
    if cell_type == "basophil":
        return style.optical_density("basophil_granules")
    cyto = cytoplasm_od(cell_type, style)
    return 0.6 * cyto + 0.12 * style.optical_density("nucleus")


def render_wbc(
    shape: WbcShape, cx: float, cy: float, style: StainStyle, pixel_size_um: float
) -> WbcPatch:
    """Render one WBC centred at a sub-pixel position.

    Args:
        shape: The cell's geometry.
        cx: Centre column in image pixels.
        cy: Centre row in image pixels.
        style: Stain style of the field.
        pixel_size_um: Pixel size, micrometres per pixel.

    Returns:
        The cell's truth masks and optical density in a local window.
    """
    rmax = shape.max_radius_px
    x0, y0 = floor(cx - rmax) - 2, floor(cy - rmax) - 2
    w, h = ceil(cx + rmax) + 3 - x0, ceil(cy + rmax) + 3 - y0
    dx, dy = cx - x0, cy - y0
    cell, nucleus = _masks(shape, h, w, dx, dy)
    tex_rng = np.random.default_rng(shape.texture_seed)
    mottling = smooth_noise(tex_rng, (h, w), 0.5 / pixel_size_um)
    chromatin_um, chromatin_amp = _CHROMATIN.get(shape.cell_type, _DEFAULT_CHROMATIN)
    chromatin = smooth_noise(tex_rng, (h, w), chromatin_um / pixel_size_um)
    cyto_od = cytoplasm_od(shape.cell_type, style)
    od = (1.0 + 0.1 * mottling)[..., None] * cyto_od
    granules = np.zeros((h, w), np.float32)
    draw_discs(granules, shape.granules, dx, dy)
    if shape.cell_type == "basophil":
        granules *= np.where(nucleus > 0, 0.8, 1.0).astype(np.float32)
    else:
        granules *= (cell > nucleus).astype(np.float32)
    od += granules[..., None] * _granule_od(shape.cell_type, style)
    vacuoles = np.zeros((h, w), np.float32)
    draw_discs(vacuoles, shape.vacuoles, dx, dy)
    od *= (1.0 - 0.65 * vacuoles * (cell > nucleus))[..., None]
    nuc_scale = _NUCLEUS_DENSITY[shape.cell_type] * np.clip(
        1.0 + chromatin_amp * chromatin, 0.45, None
    )
    nuc_od = nuc_scale[..., None] * style.optical_density("nucleus")
    if shape.nucleoli.shape[0]:
        nuc_od = _add_nucleoli(nuc_od, shape.nucleoli, cyto_od, dx, dy, pixel_size_um)
    if shape.cell_type == "basophil":
        nuc_od += granules[..., None] * _granule_od("basophil", style)
    is_nuc = nucleus > 0
    od[is_nuc] = nuc_od[is_nuc]
    od *= (cell > 0)[..., None]
    return WbcPatch(x0=x0, y0=y0, cell=cell > 0, nucleus=is_nuc, od=od.astype(np.float32))


def _add_nucleoli(
    nuc_od: np.ndarray,
    nucleoli: np.ndarray,
    cyto_od: np.ndarray,
    dx: float,
    dy: float,
    pixel_size_um: float,
) -> np.ndarray:
    """Pale, slightly blue, soft-edged nucleoli in a nucleus optical density.

    Args:
        nuc_od: float ``(h, w, 3)`` nucleus optical density of the window.
        nucleoli: float64 ``(k, 3)`` nucleolus ``x, y, radius`` (pixels, cell centre).
        cyto_od: float32 ``(3,)`` cytoplasm optical density (the tint).
        dx: Column of the cell centre in the window.
        dy: Row of the cell centre in the window.
        pixel_size_um: Pixel size, micrometres per pixel.

    Returns:
        float32 ``(h, w, 3)``: the nucleus density with the nucleoli.
    """
    spots = np.zeros(nuc_od.shape[:2], np.float32)
    draw_discs(spots, nucleoli, dx, dy)
    soft = np.asarray(cv2.GaussianBlur(spots, (0, 0), 0.12 / pixel_size_um), np.float32)
    soft = soft[..., None]
    out = nuc_od * (1.0 - _NUCLEOLUS_PALLOR * soft) + _NUCLEOLUS_TINT * soft * cyto_od
    return np.asarray(out, np.float32)
