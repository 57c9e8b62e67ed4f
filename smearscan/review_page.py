"""The run's review page ``OUT_previews/index.html``: one entry per slide, in batch order.

Self-contained HTML (inline CSS, no JavaScript): each slide's thumbnail linked
to its overlay (written by :mod:`smearscan.review`), its counts, flags and, for
a failed slide, the error. Kept apart from the drawing code so that writing
the page needs neither OpenCV nor the masks.
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np

from smearscan.atomic import atomic_write
from smearscan.cell_types import CELL_TYPES
from smearscan.percentages import percent_of
from smearscan.results import SlideResult

log = logging.getLogger(__name__)

ENTRY_STATUSES = ("ok", "failed", "skipped")

#: Folder of the thumbnails inside ``OUT_previews/``.
THUMBNAIL_DIR = "thumbnails"


@dataclass
class PreviewEntry:
    """One slide of the review page.

    Attributes:
        slide: Slide name as found under the input (any characters).
        status: ``ok``, ``failed`` or ``skipped``.
        overlay: Overlay PNG path relative to the page folder, or ``""``.
        thumbnail: Thumbnail path relative to the page folder, or ``""``.
        counts: Ordered ``{name: value}`` (``wbc_count``, one per cell type,
            ``blast_percent``, ``rbc_count``, ``platelet_count``...).
        flags: Review flags (``blasts present``, ``too few cells``...).
        error: Error message of a failed slide, else ``""``.
    """

    slide: str
    status: str = "ok"
    overlay: str = ""
    thumbnail: str = ""
    counts: dict[str, int | float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    error: str = ""


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;background:#f6f6f4;color:#222}"
    "h1{font-size:1.4em;margin:0 0 .2em}p.summary{margin:0 0 1.2em;color:#555}"
    "main{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:1em}"
    "article.slide{background:#fff;border:1px solid #ccc;border-radius:6px;padding:.8em;"
    "overflow-wrap:anywhere}"
    "article.failed{border:2px solid #b00020;background:#fff5f5}article.skipped{opacity:.75}"
    "article h2{font-size:1em;margin:0 0 .5em;font-family:ui-monospace,monospace}"
    ".status{font-size:.8em;padding:.1em .5em;border-radius:3px;background:#ddd;margin-left:.4em}"
    ".failed .status{background:#b00020;color:#fff}"
    "img{max-width:100%;height:auto;border:1px solid #ddd;display:block;margin-bottom:.5em}"
    "table.counts{border-collapse:collapse;font-size:.85em}"
    "table.counts th{padding:.1em .6em .1em 0;text-align:left;font-weight:normal;color:#555}"
    "table.counts td{text-align:right;font-variant-numeric:tabular-nums}"
    "ul.flags{list-style:none;padding:0;margin:.5em 0 0}ul.flags li{display:inline-block;"
    "background:#ffe08a;border-radius:3px;padding:.1em .4em;margin:0 .3em .3em 0;font-size:.85em}"
    "pre.error{white-space:pre-wrap;background:#fee;padding:.5em;font-size:.85em;margin:.5em 0 0}"
    ".noimg{color:#888;font-style:italic;font-size:.85em}"
)


def _href(relative: str) -> str:
    """URL-quote each segment of a relative POSIX path (spaces, ``#``, ``?``, unicode...)."""
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    return "/".join(quote(part, safe="") if part != "/" else "" for part in parts)


def _format_count(value: object) -> str:
    """Human form of a count: ints as is, floats to one decimal, NaN/None as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return str(int(value))
    return str(value)


def _entry_html(entry: PreviewEntry) -> str:
    """One ``<article class="slide">`` for an entry; all text escaped, links quoted."""
    esc = html.escape
    status = entry.status if entry.status in ENTRY_STATUSES else "failed"
    parts = [
        f'<article class="slide {status}">',
        f'<h2>{esc(entry.slide)}<span class="status">{esc(entry.status)}</span></h2>',
    ]
    if entry.thumbnail and status != "failed":
        img = f'<img src="{esc(_href(entry.thumbnail))}" alt="{esc(entry.slide)}" loading="lazy">'
        if entry.overlay:
            img = f'<a href="{esc(_href(entry.overlay))}">{img}</a>'
        parts.append(img)
    elif entry.overlay and status != "failed":
        parts.append(f'<a href="{esc(_href(entry.overlay))}">overlay</a>')
    elif status != "failed":
        parts.append('<p class="noimg">no preview</p>')
    if entry.counts:
        rows = "".join(
            f"<tr><th>{esc(str(k).replace('_', ' '))}</th><td>{esc(_format_count(v))}</td></tr>"
            for k, v in entry.counts.items()
        )
        parts.append(f'<table class="counts">{rows}</table>')
    if entry.flags:
        flags = "".join(f"<li>{esc(f)}</li>" for f in entry.flags)
        parts.append(f'<ul class="flags">{flags}</ul>')
    if entry.error:
        parts.append(f'<pre class="error">{esc(entry.error)}</pre>')
    parts.append("</article>")
    return "\n".join(parts)


def render_index(entries: Sequence[PreviewEntry], *, title: str = "smearscan review") -> str:
    """The review page as an HTML string (see :func:`write_index`)."""
    by_status = Counter(e.status for e in entries)
    n_flagged = sum(bool(e.flags) for e in entries)
    summary = (
        f"{len(entries)} slides: {by_status.get('ok', 0)} ok, {by_status.get('failed', 0)} failed, "
        f"{by_status.get('skipped', 0)} skipped; {n_flagged} flagged for review."
    )
    body = "\n".join(_entry_html(e) for e in entries)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<p class="summary">{html.escape(summary)}</p>\n'
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def write_index(
    out_dir: Path | str,
    entries: Iterable[PreviewEntry],
    *,
    title: str = "smearscan review",
) -> Path:
    """Write ``index.html`` listing every slide, atomically.

    Each slide is one ``<article class="slide">``: name and status, the thumbnail
    linked to the full overlay (not for failed slides), a counts table, flags and
    the error message of failed slides. Self-contained (inline CSS, no JavaScript);
    all text is HTML-escaped and links are URL-quoted, relative to ``out_dir``.

    Args:
        out_dir: Preview folder (created when missing).
        entries: One entry per slide, in display order.
        title: Page title.

    Returns:
        Path of ``index.html``.
    """
    entries = list(entries)
    for entry in entries:
        if entry.status not in ENTRY_STATUSES:
            log.warning(
                "slide %r has unknown status %r; shown as failed", entry.slide, entry.status
            )
    page = render_index(entries, title=title)
    out = atomic_write(Path(out_dir) / "index.html", lambda tmp: tmp.write_text(page, "utf-8"))
    log.info("review page written: %s (%d slides)", out, len(entries))
    return out


def _entry_counts(result: SlideResult) -> dict[str, int | float]:
    if result.status != "ok" or result.wbc_count is None:
        return {}
    counts: dict[str, int | float] = {"WBC": result.wbc_count}
    counts.update({t: result.cell_counts.get(t, 0) for t in CELL_TYPES})
    blast_percent = percent_of(result.cell_counts.get("blast", 0), result.wbc_count)
    counts["blast %"] = float("nan") if blast_percent is None else blast_percent  # as in Summary
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
