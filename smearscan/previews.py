"""Review previews of processed slides: overlay PNGs, thumbnails and ``index.html``.

The files land in ``OUT_previews/`` (see DESIGN.md, output contract):

* one overlay PNG per slide: each WBC contour drawn in its cell-type colour,
  blasts marked (thick vermillion rim and a ``BLAST`` tag), the cell id beside
  each cell and a legend box (colour, type, count) in the emptiest corner;
* one thumbnail per slide;
* ``index.html``: a self-contained page (inline CSS, no JavaScript) listing every
  slide with its thumbnail linked to the full overlay, its counts and flags.

Every file is written atomically (temporary file in the same folder, then
:func:`os.replace`), so a reviewer never opens a half-written preview.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from smearscan.atomic import atomic_write
from smearscan.review_page import (  # noqa: F401  (re-exported)
    ENTRY_STATUSES,
    PreviewEntry,
    render_index,
    write_index,
)

log = logging.getLogger(__name__)

# Okabe-Ito palette (distinguishable under the common colour-vision deficiencies).
# Blast is vermillion: the only red-orange, drawn thick with a dark halo and a tag.
CELL_TYPE_COLORS: dict[str, tuple[int, int, int]] = {
    "neutrophil": (0, 114, 178),  # blue
    "lymphocyte": (86, 180, 233),  # sky blue
    "monocyte": (0, 158, 115),  # bluish green
    "eosinophil": (240, 228, 66),  # yellow
    "basophil": (204, 121, 167),  # reddish purple
    "blast": (213, 94, 0),  # vermillion
    "other": (150, 150, 150),  # grey
}
"""RGB contour colour per cell type (the ``cell_type`` values of the Cells sheet)."""

#: zlib level of the PNGs: 1 encodes a 2592x1944 overlay in ~0.3 s (level 3: ~0.5 s)
#: for files about 10 % larger.
PNG_COMPRESSION = 1

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_DARK = (20, 20, 20)
_WHITE = (255, 255, 255)
_BLAST_COLOR = CELL_TYPE_COLORS["blast"]


# --------------------------------------------------------------------------- I/O


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    """Encode an RGB (or grey) uint8 array as PNG and write it atomically."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise ValueError(f"could not encode a PNG of shape {rgb.shape} for {path}")
    return atomic_write(path, lambda tmp: tmp.write_bytes(buf.tobytes()))


def _check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a C-contiguous uint8 ``(H, W, 3)`` array or raise ValueError."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}"
        )
    return np.ascontiguousarray(image)


def _downscale(
    image: np.ndarray, cells: np.ndarray, max_side_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shrink image (area) and labels (nearest) so the longer side is at most ``max_side_px``."""
    height, width = cells.shape
    scale = max_side_px / max(height, width)
    if scale >= 1.0:
        return image, cells
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    rows = np.minimum(((np.arange(new_h) + 0.5) * height / new_h).astype(np.intp), height - 1)
    cols = np.minimum(((np.arange(new_w) + 0.5) * width / new_w).astype(np.intp), width - 1)
    log.debug("overlay downscaled %dx%d -> %dx%d", width, height, new_w, new_h)
    return small, cells[rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class _CellStyle:
    """How one label is drawn."""

    cell_type: str
    is_blast: bool


def _cell_styles(cell_table: pd.DataFrame) -> dict[int, _CellStyle]:
    """Map ``cell_id`` to its drawing style; unknown types become ``other``."""
    missing = {"cell_id", "cell_type", "is_blast"} - set(cell_table.columns)
    if missing:
        raise ValueError(f"cell_table lacks column(s) {sorted(missing)}")
    styles: dict[int, _CellStyle] = {}
    unknown: set[str] = set()
    for cid, ctype, blast in zip(
        cell_table["cell_id"], cell_table["cell_type"], cell_table["is_blast"], strict=True
    ):
        name = str(ctype)
        if name not in CELL_TYPE_COLORS:
            unknown.add(name)
            name = "other"
        styles[int(cid)] = _CellStyle(name, bool(blast) if not pd.isna(blast) else False)
    if unknown:
        log.warning("cell types %s not in CELL_TYPE_COLORS; drawn as 'other'", sorted(unknown))
    return styles


def _draw_cell_label(
    canvas: np.ndarray, cell_id: int, style: _CellStyle, box: tuple[int, int, int, int]
) -> None:
    """Write the cell id (and ``BLAST`` tag) beside the cell's bbox ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = box
    size = max(x1 - x0, y1 - y0)
    scale = float(np.clip(size / 90.0, 0.35, 3.0))
    text = f"{cell_id} BLAST" if style.is_blast else str(cell_id)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, max(1, round(scale * 2)) + 2)
    gap = max(2, size // 15)
    x = x1 + gap if x1 + gap + tw < canvas.shape[1] else max(0, x0 - gap - tw)
    y = int(np.clip((y0 + y1 + th) // 2, th + 1, canvas.shape[0] - base - 1))
    thick = max(1, round(scale * 2))
    if style.is_blast:  # white text on a vermillion tag
        pad = max(1, th // 5)
        cv2.rectangle(canvas, (x - pad, y - th - pad), (x + tw + pad, y + base), _BLAST_COLOR, -1)
        cv2.putText(canvas, text, (x, y), _FONT, scale, _WHITE, thick, cv2.LINE_AA)
    else:  # type colour with a dark outline, readable on any background
        cv2.putText(canvas, text, (x, y), _FONT, scale, _DARK, thick + 2, cv2.LINE_AA)
        colour = CELL_TYPE_COLORS[style.cell_type]
        cv2.putText(canvas, text, (x, y), _FONT, scale, colour, thick, cv2.LINE_AA)


def _draw_cells(
    canvas: np.ndarray, cells: np.ndarray, styles: dict[int, _CellStyle]
) -> Counter[str]:
    """Draw every labelled cell's contour and id; return the drawn count per type (+ blasts).

    Args:
        canvas: uint8 ``(H, W, 3)`` RGB image, drawn on in place.
        cells: int32 ``(H, W)`` instance labels aligned with ``canvas``.
        styles: ``cell_id -> style``; labels absent from it are drawn as ``other``.

    Returns:
        Counter of cell types drawn, plus the key ``"BLAST"`` for blast-flagged cells.
    """
    height, width = cells.shape
    fallback = _CellStyle("other", False)
    labelled: list[tuple[int, _CellStyle, tuple[int, int, int, int]]] = []
    for index, sl in enumerate(ndimage.find_objects(cells), start=1):
        if sl is None:
            continue
        ys = slice(max(0, sl[0].start - 1), min(height, sl[0].stop + 1))
        xs = slice(max(0, sl[1].start - 1), min(width, sl[1].stop + 1))
        mask = (cells[ys, xs] == index).astype(np.uint8)
        contours, _ = cv2.findContours(
            mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(xs.start, ys.start)
        )
        style = styles.get(index, fallback)
        box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        thick = int(np.clip(round(max(box[2] - box[0], box[3] - box[1]) / 35.0), 1, 6))
        if style.is_blast:
            cv2.drawContours(canvas, contours, -1, _DARK, 3 * thick + 4, cv2.LINE_8)
            cv2.drawContours(canvas, contours, -1, _BLAST_COLOR, 3 * thick + 2, cv2.LINE_8)
        cv2.drawContours(canvas, contours, -1, CELL_TYPE_COLORS[style.cell_type], thick, cv2.LINE_8)
        labelled.append((index, style, box))
    counts: Counter[str] = Counter()
    for index, style, box in labelled:  # text after all contours so none is painted over
        _draw_cell_label(canvas, index, style, box)
        counts[style.cell_type] += 1
        counts["BLAST"] += style.is_blast
    return counts


def _legend_corner(cells: np.ndarray, box_w: int, box_h: int) -> tuple[int, int]:
    """Top-left ``(x, y)`` of the image corner whose ``box_w x box_h`` area holds fewest cells."""
    height, width = cells.shape
    box_w, box_h = min(box_w, width), min(box_h, height)
    corners = [(0, 0), (width - box_w, 0), (0, height - box_h), (width - box_w, height - box_h)]
    occupancy = [np.count_nonzero(cells[y : y + box_h, x : x + box_w]) for x, y in corners]
    return corners[int(np.argmin(occupancy))]


def _draw_legend(canvas: np.ndarray, cells: np.ndarray, counts: Counter[str]) -> None:
    """Draw the legend box (swatch, type name, count; then the blast marker) in a corner."""
    height, width = cells.shape
    scale = float(np.clip(max(height, width) / 2000.0, 0.45, 2.0))
    thick = max(1, round(scale * 2))
    rows = [(name, f"{name}: {counts.get(name, 0)}") for name in CELL_TYPE_COLORS]
    rows.append(("BLAST", f"BLAST flag: {counts.get('BLAST', 0)}"))
    (_, th), base = cv2.getTextSize("Mg", _FONT, scale, thick)
    line = th + base + max(4, th // 2)
    swatch = th + base
    text_w = max(cv2.getTextSize(t, _FONT, scale, thick)[0][0] for _, t in rows)
    pad = max(4, th // 2)
    box_w, box_h = 3 * pad + swatch + text_w, 2 * pad + line * len(rows)
    x0, y0 = _legend_corner(cells, box_w, box_h)
    cv2.rectangle(canvas, (x0, y0), (x0 + box_w - 1, y0 + box_h - 1), _WHITE, -1)
    cv2.rectangle(canvas, (x0, y0), (x0 + box_w - 1, y0 + box_h - 1), _DARK, 1)
    for i, (name, text) in enumerate(rows):
        top = y0 + pad + i * line
        sx0, sy0, sx1, sy1 = x0 + pad, top, x0 + pad + swatch, top + swatch
        if name == "BLAST":
            cv2.rectangle(canvas, (sx0, sy0), (sx1, sy1), _BLAST_COLOR, max(2, swatch // 4))
        else:
            cv2.rectangle(canvas, (sx0, sy0), (sx1, sy1), CELL_TYPE_COLORS[name], -1)
            cv2.rectangle(canvas, (sx0, sy0), (sx1, sy1), _DARK, 1)
        org = (sx1 + pad, top + th)
        cv2.putText(canvas, text, org, _FONT, scale, _DARK, thick, cv2.LINE_AA)


def render_overlay(
    image: np.ndarray,
    cells: np.ndarray,
    cell_table: pd.DataFrame,
    out_png: Path | str,
    *,
    max_side_px: int = 4096,
) -> Path:
    """Draw cell contours coloured by type, blast marks, ids and a legend; write a PNG.

    Args:
        image: uint8 ``(H, W, 3)`` RGB slide (at any scale; grey ``(H, W)`` is accepted).
        cells: int ``(H, W)`` instance labels aligned with ``image`` (0 = background,
            label = ``cell_id``).
        cell_table: DataFrame with at least ``cell_id``, ``cell_type`` and ``is_blast``
            (bool). Labels missing from it are drawn grey as ``other``; types not in
            :data:`CELL_TYPE_COLORS` too.
        out_png: Output PNG path (parent folders are created).
        max_side_px: When the longer image side exceeds this, image (area) and labels
            (nearest) are downscaled first, so huge slides give a reviewable PNG.
            Cells smaller than about one output pixel then vanish.

    Returns:
        The PNG path. The PNG is ``(H', W')`` RGB with ``max(H', W') <= max_side_px``.

    Raises:
        ValueError: Bad shapes or dtypes, or missing table columns.
    """
    image = _check_image(image)
    cells = np.asarray(cells)
    if cells.shape != image.shape[:2] or not np.issubdtype(cells.dtype, np.integer):
        raise ValueError(
            f"cells must be an integer (H, W) label image matching the image {image.shape[:2]}, "
            f"got {cells.dtype} {cells.shape}"
        )
    if max_side_px < 16:
        raise ValueError(f"max_side_px must be at least 16, got {max_side_px}")
    styles = _cell_styles(cell_table)
    canvas, labels = _downscale(image, cells, max_side_px)
    canvas = canvas.copy() if canvas is image else canvas
    if labels.dtype != np.int32:
        labels = labels.astype(np.int32)
    counts = _draw_cells(canvas, labels, styles)
    _draw_legend(canvas, labels, counts)
    out = _write_png(Path(out_png), canvas)
    n_blasts = counts.pop("BLAST", 0)
    log.info("overlay written: %s (%d cells, %d blasts)", out, counts.total(), n_blasts)
    return out


def write_thumbnail(image: np.ndarray, out_png: Path | str, *, max_side_px: int = 320) -> Path:
    """Write a small PNG of ``image`` (area interpolation, never upscaled), atomically.

    Args:
        image: uint8 ``(H, W, 3)`` RGB (or ``(H, W)`` grey) image.
        out_png: Output PNG path.
        max_side_px: Longest side of the thumbnail, pixels.

    Returns:
        The PNG path.
    """
    image = _check_image(image)
    height, width = image.shape[:2]
    scale = min(1.0, max_side_px / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else image
    return _write_png(Path(out_png), small)
