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
import time
from pathlib import Path

import numpy as np
import pandas as pd

from smearscan.previews import render_overlay, write_thumbnail
from smearscan.resample import (
    Reader,
    nearest_indices,
    read_window,
    resample_window,
    scaled_shape,
)
from smearscan.results import SlideResult
from smearscan.review_page import (  # noqa: F401  (re-exported)
    THUMBNAIL_DIR,
    entry_flags,
    review_entry,
    write_review_page,
)
from smearscan.tiling import Window
from smearscan.zarr_store import check_key

log = logging.getLogger(__name__)

#: Side (source pixels) of the windows read at a time to build a preview.
SOURCE_BLOCK_PX = 2048


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
