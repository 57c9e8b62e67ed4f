"""Previews of processed slides for review: one overlay and thumbnail per slide, one page per run.

:func:`write_slide_previews` renders a slide after its cell stage: the slide's
own pixels (at source resolution when the longer side fits ``max_side_px``,
otherwise downscaled) with ``labels/cells`` brought to the same grid by
nearest-neighbour lookup, so every contour and id in the PNG is the cell of
the Cells sheet. It reads the slide in windows of about 2048² source pixels,
so a 40000² scan never has to sit in memory at full resolution.

:func:`write_review_page` writes ``OUT_previews/index.html`` for a finished
batch, one entry per slide (failed slides included, with their error).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from smearscan.cell_types import CELL_TYPES
from smearscan.previews import PreviewEntry, render_overlay, write_index, write_thumbnail
from smearscan.resample import (
    Reader,
    nearest_indices,
    read_window,
    resample_window,
    scaled_shape,
)
from smearscan.results import SlideResult
from smearscan.tiling import Window
from smearscan.zarr_store import check_key

log = logging.getLogger(__name__)

#: Side (source pixels) of the windows read at a time to build a preview.
SOURCE_BLOCK_PX = 2048

#: Folder of the thumbnails inside ``OUT_previews/``.
THUMBNAIL_DIR = "thumbnails"


def preview_scale(height: int, width: int, max_side_px: int) -> float:
    """Preview pixels per source pixel: 1 when the slide fits ``max_side_px``, else less."""
    return min(1.0, max_side_px / max(height, width))


def preview_arrays(
    read: Reader,
    labels: object,
    source_shape: tuple[int, int],
    s: float,
    max_side_px: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The slide's pixels and its cell labels on one preview grid.

    Args:
        read: Reader of the source image (``(H, W, 3)`` uint8, source pixels).
        labels: int32 ``(h, w)`` array (numpy or zarr) of ``labels/cells`` at the
            mask scale.
        source_shape: Source ``(H, W)`` in pixels.
        s: Mask pixels per source pixel.
        max_side_px: Longest side of the preview.

    Returns:
        ``(image, cells)``: uint8 ``(H', W', 3)`` RGB and int32 ``(H', W')``
        labels, ``max(H', W') <= max_side_px``.
    """
    height, width = source_shape
    mask_h, mask_w = labels.shape  # type: ignore[attr-defined]
    p = preview_scale(height, width, max_side_px)
    out_h, out_w = scaled_shape(height, width, p)
    rows = nearest_indices(out_h, p, s, mask_h)
    cols = nearest_indices(out_w, p, s, mask_w)
    image = np.empty((out_h, out_w, 3), np.uint8)
    cells = np.empty((out_h, out_w), np.int32)
    block = max(32, int(SOURCE_BLOCK_PX * p))  # preview px whose source is ~SOURCE_BLOCK_PX
    for y0 in range(0, out_h, block):
        y1 = min(out_h, y0 + block)
        r0, r1 = int(rows[y0:y1].min()), int(rows[y0:y1].max()) + 1
        for x0 in range(0, out_w, block):
            x1 = min(out_w, x0 + block)
            image[y0:y1, x0:x1] = resample_window(read, Window(y0, y1, x0, x1), p)
            c0, c1 = int(cols[x0:x1].min()), int(cols[x0:x1].max()) + 1
            part = read_window(labels, Window(r0, r1, c0, c1))
            cells[y0:y1, x0:x1] = part[(rows[y0:y1] - r0)[:, None], (cols[x0:x1] - c0)[None, :]]
    return image, cells


def preview_names(key: str) -> tuple[str, str]:
    """Overlay and thumbnail paths of a slide, relative to ``OUT_previews/``.

    Raises:
        OutputPathError: ``key`` is not one safe name (it would leave ``OUT_previews/``).
    """
    check_key(key)
    return f"{key}.png", f"{THUMBNAIL_DIR}/{key}.png"


def write_slide_previews(
    read: Reader,
    labels: object,
    result: SlideResult,
    s: float,
    out_dir: Path,
    key: str,
    *,
    max_side_px: int = 4096,
    thumbnail_px: int = 320,
) -> Path:
    """Write the overlay PNG and the thumbnail of one slide; set ``result.preview_path``.

    Args:
        read: Reader of the source image.
        labels: ``labels/cells`` (int32 ``(h, w)`` at the mask scale).
        result: The slide's result, cell stage done (``width``, ``height``, ``cells``).
        s: Mask pixels per source pixel.
        out_dir: ``OUT_previews/``.
        key: The slide's unique key (file names).
        max_side_px: Longest side of the overlay.
        thumbnail_px: Longest side of the thumbnail.

    Returns:
        Path of the overlay PNG.
    """
    if result.height is None or result.width is None:
        raise ValueError(f"{result.slide}: slide size unknown, no preview")
    image, cells = preview_arrays(read, labels, (result.height, result.width), s, max_side_px)
    table = pd.DataFrame(result.cells, columns=["cell_id", "cell_type", "is_blast"])
    overlay_name, thumb_name = preview_names(key)
    overlay = render_overlay(image, cells, table, out_dir / overlay_name, max_side_px=max_side_px)
    write_thumbnail(image, out_dir / thumb_name, max_side_px=thumbnail_px)
    result.preview_path = str(overlay.resolve())
    return overlay


def previews_or_note(
    read: Reader,
    cells: object,
    result: SlideResult,
    s: float,
    out_dir: Path,
    key: str,
    max_side_px: int,
) -> None:
    """:func:`write_slide_previews`, where a failure is a note, not a failed slide (the
    counts and masks are already written and stay valid); its wall time goes into
    ``result.stage_seconds["preview"]``."""
    start = time.perf_counter()
    try:
        write_slide_previews(read, cells, result, s, out_dir, key, max_side_px=max_side_px)
    except Exception as exc:
        log.error("%s: preview not written: %s: %s", result.slide, type(exc).__name__, exc)
        log.debug("preview failure", exc_info=True)
        result.notes.append(f"preview not written: {type(exc).__name__}: {exc}")
    result.stage_seconds["preview"] = round(time.perf_counter() - start, 3)


def _entry_counts(result: SlideResult) -> dict[str, int | float]:
    if result.status != "ok" or result.wbc_count is None:
        return {}
    counts: dict[str, int | float] = {"WBC": result.wbc_count}
    counts.update({t: result.cell_counts.get(t, 0) for t in CELL_TYPES})
    blasts = sum(bool(c.get("is_blast")) for c in result.cells)
    counts["blast %"] = round(100.0 * blasts / result.wbc_count, 1) if result.wbc_count else 0.0
    counts["RBC"] = result.rbc_count if result.rbc_count is not None else float("nan")
    counts["platelets"] = result.platelet_count if result.platelet_count is not None else 0
    return counts


def entry_flags(result: SlideResult) -> list[str]:
    """The field's flags, then its group's flags that the field does not have itself.

    A group flag is marked with its group (``LOW_WBC_COUNT (group Im001)``)
    unless the field is a group of its own.
    """
    flags = list(result.flags)
    own = not result.group or result.group == result.slide
    for flag in result.group_flags:
        if flag not in result.flags:
            flags.append(flag if own else f"{flag} (group {result.group})")
    return flags


def review_entry(result: SlideResult, out_dir: Path) -> PreviewEntry:
    """The review-page entry of one slide (paths relative to ``out_dir``)."""
    overlay = thumbnail = ""
    if result.preview_path and Path(result.preview_path).is_file():
        overlay_path = Path(result.preview_path)
        thumb_path = overlay_path.parent / THUMBNAIL_DIR / overlay_path.name
        overlay = Path(os.path.relpath(overlay_path, out_dir)).as_posix()
        if thumb_path.is_file():
            thumbnail = Path(os.path.relpath(thumb_path, out_dir)).as_posix()
    error = f"{result.error_stage}: {result.error}" if result.error else ""
    return PreviewEntry(
        slide=result.slide,
        status=result.status,
        overlay=overlay,
        thumbnail=thumbnail,
        counts=_entry_counts(result),
        flags=entry_flags(result),
        error=error,
    )


def write_review_page(results: Sequence[SlideResult], out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` with one entry per slide, in batch order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_index(out_dir, [review_entry(r, out_dir) for r in results])
