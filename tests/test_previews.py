"""Tests of smearscan.previews: overlay PNGs, thumbnails and the index.html review page.

The browser test loads the page in headless Chromium (:mod:`tests.chromium`);
it is skipped when the browser is absent.
"""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage.segmentation import find_boundaries

from smearscan.previews import (
    CELL_TYPE_COLORS,
    PreviewEntry,
    render_overlay,
    write_index,
    write_thumbnail,
)
from smearscan.synth import SynthField, generate_field
from tests.chromium import CHROMIUM, MISSING, file_of, load_page

ODD_NAME = "<b>&\"' and spaces #1?.png"


@pytest.fixture(scope="module")
def field() -> SynthField:
    return generate_field(seed=0, width=1200, height=900)


@pytest.fixture(scope="module")
def blast_id(field: SynthField) -> int:
    return field.wbcs[len(field.wbcs) // 2].id


def _table(field: SynthField, blast_id: int | None) -> pd.DataFrame:
    """Truth types of every WBC; ``blast_id`` typed ``blast`` and flagged."""
    return pd.DataFrame(
        {
            "cell_id": [w.id for w in field.wbcs],
            "cell_type": ["blast" if w.id == blast_id else w.cell_type for w in field.wbcs],
            "is_blast": [w.id == blast_id for w in field.wbcs],
        }
    )


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"unreadable PNG {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _colour_mask(
    overlay: np.ndarray, image: np.ndarray, colour: tuple[int, int, int]
) -> np.ndarray:
    """Pixels the overlay painted in exactly ``colour``."""
    return np.all(overlay == colour, axis=2) & np.any(overlay != image, axis=2)


def _window(w: Any, pad: int, shape: tuple[int, ...], extra_right: int = 0) -> tuple[slice, slice]:
    return (
        slice(max(0, w.bbox_y0 - pad), min(shape[0], w.bbox_y1 + pad)),
        slice(max(0, w.bbox_x0 - pad), min(shape[1], w.bbox_x1 + pad + extra_right)),
    )


# ----------------------------------------------------------------------- overlay


def test_overlay_contours_in_type_colours(field: SynthField, blast_id: int, tmp_path: Path) -> None:
    out = render_overlay(field.image, field.cells, _table(field, blast_id), tmp_path / "o.png")
    overlay = _read_rgb(out)
    assert overlay.shape == field.image.shape
    assert sorted(os.listdir(tmp_path)) == ["o.png"]  # atomic write left no temp file
    outer = find_boundaries(field.cells, mode="outer").astype(np.uint8)
    boundary = cv2.dilate(outer, np.ones((3, 3), np.uint8), iterations=3) > 0
    for w in field.wbcs:
        if w.id == blast_id:
            continue
        win = _window(w, 3, overlay.shape)
        painted = _colour_mask(overlay[win], field.image[win], CELL_TYPE_COLORS[w.cell_type])
        assert painted.sum() > 100, f"cell {w.id} ({w.cell_type}) has no contour in its colour"
        on_edge = (painted & boundary[win]).sum() / painted.sum()
        assert on_edge > 0.8, f"cell {w.id}: coloured pixels are not on its boundary"


def test_blast_is_marked_differently(field: SynthField, blast_id: int, tmp_path: Path) -> None:
    marked = _table(field, blast_id)
    plain = marked.assign(is_blast=False)
    a = _read_rgb(render_overlay(field.image, field.cells, marked, tmp_path / "a.png"))
    b = _read_rgb(render_overlay(field.image, field.cells, plain, tmp_path / "b.png"))
    w = next(w for w in field.wbcs if w.id == blast_id)
    win = _window(w, 10, a.shape, extra_right=w.bbox_x1 - w.bbox_x0)  # cell + its tag
    colour = CELL_TYPE_COLORS["blast"]
    n_marked = _colour_mask(a[win], field.image[win], colour).sum()
    n_plain = _colour_mask(b[win], field.image[win], colour).sum()
    assert n_plain > 50  # a plain blast-typed cell still has its vermillion contour
    assert n_marked > 3 * n_plain  # thick rim + filled BLAST tag
    dark = np.all(a[win] <= 25, axis=2).sum() - np.all(b[win] <= 25, axis=2).sum()
    assert dark > 50  # dark halo around the rim


def test_legend_in_a_corner(field: SynthField, blast_id: int, tmp_path: Path) -> None:
    overlay = _read_rgb(
        render_overlay(field.image, field.cells, _table(field, blast_id), tmp_path / "o.png")
    )
    h, w = overlay.shape[:2]
    size = (300, 330)
    corners = [(0, 0), (0, w - size[1]), (h - size[0], 0), (h - size[0], w - size[1])]
    found = []
    for y, x in corners:
        region = overlay[y : y + size[0], x : x + size[1]]
        white = np.all(region == 255, axis=2).mean()
        swatches = [np.all(region == c, axis=2).sum() >= 40 for c in CELL_TYPE_COLORS.values()]
        found.append(white > 0.15 and all(swatches))
    assert sum(found) == 1, "expected one legend box with a swatch of every cell type"


def _disks(shape: tuple[int, int], centres: list[tuple[int, int]], r: int) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    for i, (x, y) in enumerate(centres, start=1):
        cv2.circle(labels, (x, y), r, i, -1)
    return labels


def test_unknown_labels_and_types_drawn_as_other(tmp_path: Path) -> None:
    image = np.full((400, 600, 3), 230, np.uint8)
    labels = _disks((400, 600), [(150, 200), (300, 200), (450, 200)], 40)
    table = pd.DataFrame(
        {"cell_id": [1, 3], "cell_type": ["neutrophil", "smudge"], "is_blast": [False, False]}
    )
    overlay = _read_rgb(render_overlay(image, labels, table, tmp_path / "o.png"))
    grey = _colour_mask(overlay, image, CELL_TYPE_COLORS["other"])
    blue = _colour_mask(overlay, image, CELL_TYPE_COLORS["neutrophil"])
    ring = find_boundaries(labels, mode="inner")
    for label, mask in ((1, blue), (2, grey), (3, grey)):
        assert (mask & ring & (labels == label)).sum() > 100, f"label {label} not drawn as expected"
    assert (grey & ring & (labels == 1)).sum() == 0


def test_huge_image_is_downscaled(tmp_path: Path) -> None:
    image = np.full((1500, 6000, 3), 220, np.uint8)
    labels = _disks((1500, 6000), [(500, 700), (3000, 700), (5500, 700)], 200)
    table = pd.DataFrame(
        {"cell_id": [1, 2, 3], "cell_type": ["monocyte"] * 3, "is_blast": [False, True, False]}
    )
    overlay = _read_rgb(render_overlay(image, labels, table, tmp_path / "o.png", max_side_px=1024))
    assert overlay.shape == (256, 1024, 3)
    small = cv2.resize(image, (1024, 256), interpolation=cv2.INTER_AREA)
    assert _colour_mask(overlay, small, CELL_TYPE_COLORS["monocyte"]).sum() > 300
    assert _colour_mask(overlay, small, CELL_TYPE_COLORS["blast"]).sum() > 300


def test_overlay_rejects_bad_input(field: SynthField, tmp_path: Path) -> None:
    table = _table(field, None)
    with pytest.raises(ValueError, match="matching the image"):
        render_overlay(field.image, field.cells[:-1], table, tmp_path / "o.png")
    with pytest.raises(ValueError, match="is_blast"):
        render_overlay(field.image, field.cells, table.drop(columns="is_blast"), tmp_path / "o.png")
    with pytest.raises(ValueError, match="RGB uint8"):
        render_overlay(field.image.astype(float), field.cells, table, tmp_path / "o.png")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------- thumbnail


def test_thumbnail_size(field: SynthField, tmp_path: Path) -> None:
    out = write_thumbnail(field.image, tmp_path / "t.png")
    assert _read_rgb(out).shape == (240, 320, 3)
    assert _read_rgb(write_thumbnail(field.image, out, max_side_px=100)).shape == (75, 100, 3)
    tiny = field.image[:50, :80]
    assert _read_rgb(write_thumbnail(tiny, tmp_path / "s.png")).shape == (50, 80, 3)
    assert sorted(os.listdir(tmp_path)) == ["s.png", "t.png"]


# ------------------------------------------------------------------------- index


class _PageParser(HTMLParser):
    """Collects articles, img srcs, link hrefs and the text of each article."""

    def __init__(self) -> None:
        super().__init__()
        self.articles: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "article":
            self.articles.append({"class": a.get("class"), "img": [], "href": [], "text": ""})
        elif self.articles and tag == "img":
            self.articles[-1]["img"].append(a["src"])
        elif self.articles and tag == "a":
            self.articles[-1]["href"].append(a["href"])

    def handle_data(self, data: str) -> None:
        if self.articles:
            self.articles[-1]["text"] += data


def _entries() -> list[PreviewEntry]:
    counts: dict[str, int | float] = {"wbc_count": 12, "neutrophil": 7, "blast_percent": 8.33}
    return [
        PreviewEntry(
            slide=ODD_NAME,
            overlay=f"overlays/{ODD_NAME}",
            thumbnail=f"thumbs/{ODD_NAME}",
            counts=counts,
            flags=["blasts present", "<script>alert(1)</script>"],
        ),
        PreviewEntry(
            slide="Ünïcode slide 2.tif",
            overlay="overlays/slide 2.png",
            thumbnail="thumbs/slide 2.png",
            counts={"wbc_count": 100, "blast_percent": float("nan")},
        ),
        PreviewEntry(slide="plain.png", overlay="plain_overlay.png", thumbnail="plain_thumb.png"),
        PreviewEntry(slide="broken.tif", status="failed", error="read: <truncated> & bad"),
    ]


def test_index_escapes_quotes_and_lists_every_slide(tmp_path: Path) -> None:
    page = write_index(tmp_path, _entries(), title="night <run> & co").read_text("utf-8")
    assert sorted(os.listdir(tmp_path)) == ["index.html"]
    assert "<b>" not in page and "<script>" not in page and "<truncated>" not in page
    assert "&lt;b&gt;&amp;&quot;&#x27; and spaces #1?.png" in page
    assert "night &lt;run&gt; &amp; co" in page
    quoted = "%3Cb%3E%26%22%27%20and%20spaces%20%231%3F.png"
    assert f'src="thumbs/{quoted}"' in page and f'href="overlays/{quoted}"' in page
    parser = _PageParser()
    parser.feed(page)
    arts = parser.articles
    assert len(arts) == 4
    assert ODD_NAME in arts[0]["text"] and "Ünïcode slide 2.tif" in arts[1]["text"]
    assert "blasts present" in arts[0]["text"] and "8.3" in arts[0]["text"]
    assert [unquote(s) for s in arts[0]["img"]] == [f"thumbs/{ODD_NAME}"]
    assert [unquote(h) for h in arts[1]["href"]] == ["overlays/slide 2.png"]
    failed = arts[3]
    assert "failed" in failed["class"] and not failed["img"] and not failed["href"]
    assert "read: <truncated> & bad" in failed["text"]


def _build_previews(out: Path, field: SynthField, blast_id: int) -> list[PreviewEntry]:
    entries = _entries()
    table = _table(field, blast_id)
    for e in entries[:3]:
        render_overlay(field.image, field.cells, table, out / e.overlay, max_side_px=800)
        write_thumbnail(field.image, out / e.thumbnail)
    return entries


@pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING)
def test_index_in_headless_chromium(field: SynthField, blast_id: int, tmp_path: Path) -> None:
    out = tmp_path / "OUT_previews"
    index = write_index(out, _build_previews(out, field, blast_id))
    view = load_page(index, tmp_path / "profile")
    state = view.state
    assert state["articles"] == 4 and state["failed"] == 1
    assert len(state["images"]) == 3
    for src, loaded in state["images"]:
        assert loaded and file_of(src).is_file(), f"image did not load: {src}"
    assert len(state["links"]) == 3 and all(file_of(h).is_file() for h in state["links"])
    assert not view.errors, f"console errors: {view.errors}"
    png = view.screenshot_png
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
