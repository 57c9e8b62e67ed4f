"""EXIF/TIFF orientation applied, APNG frames and TIFF series noted (issue #13, item 17).

A sideways camera field used to be analysed as stored (cell positions did not
match the image as a viewer shows it); an animated PNG or a TIFF of several
image series silently gave its first frame or series. The pixels are now
turned as Pillow's ``ImageOps.exif_transpose`` turns them, and all three are
listed in the slide's notes (the Summary's ``notes`` column).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from smearscan.orientation import ORIENTATION_TAG, apply_orientation
from smearscan.slide_io import open_slide, read_region


def _field(height: int = 48, width: int = 64) -> np.ndarray:
    """A field whose every pixel differs, so any turn or mirror is seen."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _exif(code: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = code
    return exif.tobytes()


@pytest.mark.parametrize("code", range(1, 9))
def test_orientation_codes_turn_as_pillow_does(code: int) -> None:
    pixels = _field()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", exif=_exif(code))
    shown = np.asarray(ImageOps.exif_transpose(Image.open(buffer)).convert("RGB"))
    np.testing.assert_array_equal(apply_orientation(pixels, code), shown)


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "sideways.jpg"
    Image.fromarray(_field()).save(path, quality=95, exif=_exif(6))
    with Image.open(path) as image:
        shown = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    with open_slide(path) as slide:
        assert (slide.height, slide.width) == (64, 48)  # turned 90°: rows and columns swap
        np.testing.assert_array_equal(np.asarray(slide.array), shown)
        assert any("EXIF orientation 6 applied" in n for n in slide.notes), slide.notes


def test_png_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "upside_down.png"
    pixels = _field()
    Image.fromarray(pixels).save(path, exif=_exif(3))
    with open_slide(path) as slide:
        np.testing.assert_array_equal(np.asarray(slide.array), pixels[::-1, ::-1])
        assert any("EXIF orientation 3 applied" in n for n in slide.notes), slide.notes


def test_tiff_orientation_is_applied_to_slide_and_regions(tmp_path: Path) -> None:
    path = tmp_path / "turned.tif"
    pixels = _field()
    tifffile.imwrite(path, pixels, photometric="rgb", extratags=[(274, "H", 1, 8, True)])
    with open_slide(path) as slide:
        expected = np.rot90(pixels, k=1)  # code 8: turned 90° counter-clockwise
        np.testing.assert_array_equal(np.asarray(slide.array), expected)
        np.testing.assert_array_equal(read_region(slide, 5, 30, 2, 40), expected[5:30, 2:40])
        assert any("TIFF orientation 8 applied" in n for n in slide.notes), slide.notes


def test_apng_notes_that_only_the_first_frame_is_used(tmp_path: Path) -> None:
    path = tmp_path / "animated.png"
    frames = [Image.fromarray(_field() // (i + 1)) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    with open_slide(path) as slide:
        np.testing.assert_array_equal(np.asarray(slide.array), np.asarray(frames[0]))
        assert "animated PNG (APNG) of 3 frames: only the first frame used" in slide.notes


def test_multi_series_tiff_notes_that_only_series_0_is_used(tmp_path: Path) -> None:
    path = tmp_path / "two.tif"
    first = _field()
    tifffile.imwrite(path, first, photometric="rgb")
    tifffile.imwrite(path, np.zeros((16, 16), np.uint16), append=True)
    with open_slide(path) as slide:
        np.testing.assert_array_equal(np.asarray(slide.array), first)
        notes = [n for n in slide.notes if "image series" in n]
    assert notes == ["TIFF holds 2 image series (shaped 48x64x3, shaped 16x16): only series 0 used"]
