"""EXIF / TIFF orientation: turn the stored pixels the way an image viewer shows them.

A camera held sideways stores the pixels as the sensor read them and writes
an orientation code (EXIF tag 274 in a JPEG's APP1 or a PNG's ``eXIf``
chunk; the TIFF ``Orientation`` tag, same codes). Viewers, and a lab's
archive of previews, show the image turned; smearscan turns the pixels the
same way (as Pillow's ``ImageOps.exif_transpose``) and notes it, so cell
positions in the report match the image as the operator sees it.

Codes (row 0 / column 0 of the stored image is at the ...): 1 top/left (as
stored), 2 mirrored left-right, 3 turned 180°, 4 mirrored top-bottom,
5 transposed, 6 turned 90° clockwise, 7 transversed, 8 turned 90°
counter-clockwise (to be shown upright).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from PIL import ExifTags, Image

logger = logging.getLogger(__name__)

ORIENTATION_TAG = int(ExifTags.Base.Orientation)
"""EXIF and TIFF tag number of the orientation (274)."""

ORIENTATIONS: dict[int, str] = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "transposed (mirrored about the main diagonal)",
    6: "rotated 90° clockwise",
    7: "transversed (mirrored about the other diagonal)",
    8: "rotated 90° counter-clockwise",
}
"""What each orientation code other than 1 does to the stored pixels to show them upright."""

ArrayT = TypeVar("ArrayT")


def exif_orientation(info: Mapping[Any, Any]) -> int:
    """The EXIF orientation code in a Pillow image's ``info`` (1 when absent or unreadable).

    Args:
        info: ``image.info`` of an opened (not necessarily decoded) Pillow image;
            its ``exif`` entry holds the raw EXIF block.
    """
    raw = info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
        value = int(exif.get(ORIENTATION_TAG, 1))
    except (ValueError, TypeError, KeyError, OSError, SyntaxError) as exc:
        logger.debug("unreadable EXIF block ignored: %s", exc)
        return 1
    return value


def orientation_note(code: int, source: str = "EXIF") -> str | None:
    """The Summary note for orientation ``code`` (None for 1, the stored orientation)."""
    if code == 1:
        return None
    if code not in ORIENTATIONS:
        return f"{source} orientation {code} is not a valid code (1-8): pixels used as stored"
    return f"{source} orientation {code} applied: pixels {ORIENTATIONS[code]} as viewers show them"


def apply_orientation(array: ArrayT, code: int) -> ArrayT:
    """Turn ``array`` as orientation ``code`` says (a view; unknown codes: unchanged).

    Works on NumPy and Dask arrays alike (slicing and transposition only).

    Args:
        array: ``(height, width, channels)`` pixels as stored, any dtype.
        code: Orientation code 1-8.

    Returns:
        The pixels as shown upright: ``(width, height, channels)`` for codes 5-8.
    """
    a: Any = array
    if code == 2:
        a = a[:, ::-1]
    elif code == 3:
        a = a[::-1, ::-1]
    elif code == 4:
        a = a[::-1]
    elif code in (5, 6, 7, 8):
        a = a.transpose(1, 0, 2)
        a = {5: a, 6: a[:, ::-1], 7: a[::-1, ::-1], 8: a[::-1]}[code]
    result: ArrayT = a
    return result
