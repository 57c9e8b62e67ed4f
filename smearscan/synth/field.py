"""Generate one synthetic peripheral blood smear field with exact ground truth.

The field is built in drawing order: red cells (slight overlaps, cut by the
field border), platelets in the gaps, then WBCs on top. Each layer adds to an
optical-density image and writes the truth maps; the camera image is made
last (illumination, blur, noise), so the truth is the exact geometry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from smearscan.errors import ConfigError
from smearscan.synth.layout import WbcPlacement, plan_wbcs
from smearscan.synth.smear import (
    apply_optics,
    clip_window,
    place_platelets,
    place_rbcs,
    render_platelets,
    render_rbcs,
)
from smearscan.synth.stain import StainStyle
from smearscan.synth.truth import CellInfo, SynthField, relabel_sorted, wbc_records

logger = logging.getLogger(__name__)

#: Default tile-border positions (pixels): the borders of 1024 px and 1280 px
#: tile grids within a 2592x1944 camera field. One WBC is centred on each line
#: ``x = v`` (v < width) and ``y = v`` (v < height).
DEFAULT_BORDER_POSITIONS_PX: tuple[int, ...] = (1024, 1280, 2048, 2560)

_MIN_SIDE_PX = 64
_MAX_SIDE_PX = 16384
_PIXEL_SIZE_RANGE_UM = (0.05, 1.0)
#: Fields with a shorter side (µm) get no free WBCs and no pairs by default.
_ROOMY_SIDE_UM = 40.0


def generate_field(
    seed: int,
    width: int = 2592,
    height: int = 1944,
    pixel_size_um: float = 0.1,
    *,
    n_wbc: int | None = None,
    n_touching_pairs: int | None = None,
    border_positions_px: Sequence[int] = DEFAULT_BORDER_POSITIONS_PX,
    stain: StainStyle | None = None,
    blasts: int = 0,
) -> SynthField:
    """Generate a Romanowsky-stained smear field and its exact truth.

    The same arguments always give the same field (``numpy.random.default_rng(seed)``).

    Args:
        seed: Non-negative seed.
        width: Field width, pixels (64-16384).
        height: Field height, pixels (64-16384).
        pixel_size_um: Pixel size, micrometres per pixel (0.05-1.0); sets every
            object size (RBC 7-8 µm, platelets 2-3 µm, WBC sizes of DESIGN.md).
        n_wbc: Number of WBCs. Default: the border cells plus the touching
            pairs plus ``max(2, area_um2 / 10000)`` free cells (15 for a
            2592x1944 field at 0.1 µm/px); no free cells when the shorter side
            is under 40 µm.
        n_touching_pairs: Number of pairs of WBCs whose cytoplasms touch
            (overlap 0.2-0.6 µm, nuclei apart). Default: ``max(1, area_um2 / 25000)``
            (at most ``n_wbc // 2``); none when the shorter side is under 40 µm.
        border_positions_px: Tile-border positions: one WBC is centred exactly
            on each line ``x = v`` with ``0 < v < width`` and ``y = v`` with
            ``0 < v < height``, as far as ``n_wbc`` minus the paired cells allows.
        stain: Stain style; default a random style drawn from ``seed``.
        blasts: Number of blast-like cells (lymphoblast look, type ``"blast"``,
            see :mod:`smearscan.synth.blasts`) planted as extra free WBCs, in
            addition to ``n_wbc``. Default 0: a normal smear, the same field as
            a generator without this option for the same seed.

    Returns:
        The image and its truth maps and records.

    Raises:
        ConfigError: On invalid parameters, or when the WBCs do not fit.
    """
    started = time.perf_counter()
    _validate(seed, width, height, pixel_size_um, n_wbc, n_touching_pairs, border_positions_px)
    if isinstance(blasts, bool) or not isinstance(blasts, int | np.integer) or blasts < 0:
        raise ConfigError(f"blasts must be a non-negative integer, got {blasts!r}")
    positions = tuple(int(v) for v in border_positions_px)
    lines = [("x", v) for v in sorted(set(positions)) if 0 < v < width]
    lines += [("y", v) for v in sorted(set(positions)) if 0 < v < height]
    n_wbc, n_pairs = _default_counts(width, height, pixel_size_um, n_wbc, n_touching_pairs, lines)
    rng = np.random.default_rng(seed)
    style = stain if stain is not None else StainStyle.random(rng)
    placements = plan_wbcs(
        rng, width, height, pixel_size_um, style, n_wbc, n_pairs, lines, int(blasts)
    )
    field = _compose(rng, width, height, pixel_size_um, style, placements)
    field.seed = seed
    field.border_positions_px = positions
    logger.debug(
        "synthetic field seed=%d %dx%d: %d WBC, %d RBC, %d platelets in %.2f s",
        seed,
        width,
        height,
        field.n_wbc,
        field.n_rbc,
        field.n_platelets,
        time.perf_counter() - started,
    )
    return field


def _validate(
    seed: int,
    width: int,
    height: int,
    pixel_size_um: float,
    n_wbc: int | None,
    n_pairs: int | None,
    border_positions_px: Sequence[int],
) -> None:
    """Raise :class:`ConfigError` on any invalid generator parameter."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    for name, side in (("width", width), ("height", height)):
        if not isinstance(side, int | np.integer) or not _MIN_SIDE_PX <= side <= _MAX_SIDE_PX:
            raise ConfigError(
                f"{name} must be an integer in [{_MIN_SIDE_PX}, {_MAX_SIDE_PX}] px, got {side!r}"
            )
    lo, hi = _PIXEL_SIZE_RANGE_UM
    if not lo <= float(pixel_size_um) <= hi:
        raise ConfigError(f"pixel_size_um must be in [{lo}, {hi}] µm/px, got {pixel_size_um!r}")
    if n_wbc is not None and n_wbc < 0:
        raise ConfigError(f"n_wbc must be >= 0, got {n_wbc}")
    if n_pairs is not None and n_pairs < 0:
        raise ConfigError(f"n_touching_pairs must be >= 0, got {n_pairs}")
    if n_wbc is not None and n_pairs is not None and 2 * n_pairs > n_wbc:
        raise ConfigError(
            f"n_touching_pairs={n_pairs} needs at least {2 * n_pairs} WBCs, got {n_wbc}"
        )
    for v in border_positions_px:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise ConfigError(f"border_positions_px must be non-negative integers, got {v!r}")


def _default_counts(
    width: int,
    height: int,
    pixel_size_um: float,
    n_wbc: int | None,
    n_pairs: int | None,
    lines: list[tuple[str, int]],
) -> tuple[int, int]:
    """Resolve the default WBC and touching-pair counts (see :func:`generate_field`)."""
    area_um2 = width * height * pixel_size_um**2
    roomy = min(width, height) * pixel_size_um >= _ROOMY_SIDE_UM
    if n_pairs is None:
        n_pairs = max(1, round(area_um2 / 25000)) if roomy else 0
        if n_wbc is not None:
            n_pairs = min(n_pairs, n_wbc // 2)
    if n_wbc is None:
        n_free = max(2, round(area_um2 / 10000)) if roomy else 0
        n_wbc = len(lines) + 2 * n_pairs + n_free
    return n_wbc, n_pairs


def _compose(
    rng: np.random.Generator,
    width: int,
    height: int,
    pixel_size_um: float,
    style: StainStyle,
    placements: list[WbcPlacement],
) -> SynthField:
    """Draw all layers, build the truth maps and the camera image."""
    blockers = np.array(
        [(p.x, p.y, p.shape.max_radius_px) for p in placements], dtype=np.float64
    ).reshape(-1, 3)
    rbc_layout = place_rbcs(rng, width, height, pixel_size_um, blockers)
    plt_layout = place_platelets(rng, width, height, pixel_size_um, rbc_layout, blockers)
    od = np.zeros((height, width, 3), np.float32)
    rbcs = np.zeros((height, width), np.int32)
    platelets = np.zeros((height, width), np.int32)
    render_rbcs(rbc_layout, style, rng, od, rbcs)
    render_platelets(plt_layout, style, rng, pixel_size_um, od, platelets)
    rbcs[platelets > 0] = 0
    cells, nuclei = _paste_wbcs(placements, od)
    rbcs[cells > 0] = 0
    platelets[cells > 0] = 0
    classes = np.zeros((height, width), np.uint8)
    classes[rbcs > 0] = 1
    classes[platelets > 0] = 4
    classes[cells > 0] = 2
    classes[nuclei > 0] = 3
    relabel_sorted(rbcs)
    relabel_sorted(platelets)
    lut = _relabel_wbcs(cells, nuclei, len(placements))
    infos, pairs = _wbc_facts(placements, lut)
    edge = np.concatenate([rbcs[0], rbcs[-1], rbcs[:, 0], rbcs[:, -1]])
    return SynthField(
        image=apply_optics(od, style, rng, pixel_size_um),
        classes=classes,
        cells=cells,
        nuclei=nuclei,
        rbcs=rbcs,
        platelets=platelets,
        pixel_size_um=float(pixel_size_um),
        wbcs=wbc_records(cells, nuclei, infos),
        n_rbc=int(rbcs.max(initial=0)),
        n_rbc_touching_edge=int(np.unique(edge[edge > 0]).size),
        n_platelets=int(platelets.max(initial=0)),
        seed=0,
        stain=style,
        touching_pairs=pairs,
    )


def _relabel_wbcs(cells: np.ndarray, nuclei: np.ndarray, n: int) -> np.ndarray:
    """Renumber WBCs by centroid row then column; returns the old -> new lookup table."""
    index = np.arange(1, n + 1)
    keys = np.zeros((n + 1, 2), np.float64)
    if n:
        centroids = ndimage.center_of_mass(np.ones_like(cells, dtype=np.uint8), cells, index)
        keys[1:] = np.array(centroids, dtype=np.float64).reshape(n, 2)
    lut = relabel_sorted(cells, keys)
    if lut.size < n + 1:
        lut = np.pad(lut, (0, n + 1 - lut.size))
    nuclei[...] = lut[nuclei]
    return lut


def _paste_wbcs(placements: list[WbcPlacement], od: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw the WBCs in order over ``od`` (float32 ``(H, W, 3)``, in place).

    Returns:
        ``(cells, nuclei)``: int32 ``(H, W)`` maps with ids ``1..n`` in drawing order.
    """
    cells = np.zeros(od.shape[:2], np.int32)
    nuclei = np.zeros(od.shape[:2], np.int32)
    for k, p in enumerate(placements, start=1):
        h, w = p.patch.cell.shape
        sl, local = clip_window(p.patch.x0, p.patch.y0, w, h, cells.shape)
        cell, nucleus = p.patch.cell[local], p.patch.nucleus[local]
        cells[sl][cell] = k
        nuclei[sl][cell] = 0
        nuclei[sl][nucleus] = k
        od[sl][cell] = p.patch.od[local][cell]
    return cells, nuclei


def _wbc_facts(
    placements: list[WbcPlacement], lut: np.ndarray
) -> tuple[list[CellInfo], list[tuple[int, int]]]:
    """Generator facts per final WBC id, and the planned pairs as final ids.

    Args:
        placements: WBCs in drawing order (drawing index ``k`` had id ``k + 1``).
        lut: int ``(n + 1,)`` drawing id -> final id (0 when not visible).

    Returns:
        ``(infos, pairs)``: ``infos[id - 1]`` for each final id; pairs ``(a, b)``, ``a < b``.
    """
    infos = [CellInfo("", 0, 0.0, None)] * int(lut.max(initial=0))
    for k, p in enumerate(placements, start=1):
        if lut[k]:
            infos[lut[k] - 1] = CellInfo(
                p.shape.cell_type, p.shape.n_lobes, p.shape.diameter_um, p.border_line
            )
    pairs = sorted(
        (int(min(lut[i + 1], lut[p.partner + 1])), int(max(lut[i + 1], lut[p.partner + 1])))
        for i, p in enumerate(placements)
        if p.partner is not None and i < p.partner
    )
    return infos, pairs
