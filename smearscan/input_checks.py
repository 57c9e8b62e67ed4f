"""Checks that run on an input file before any pixel is decoded (hostile-input guard).

:func:`smearscan.slide_io.open_slide` calls these so that a bad file fails as
one clear :class:`~smearscan.errors.InputError` (one ``Errors`` row) instead
of hanging, exhausting memory or crashing the batch:

* :func:`check_readable_file`: only regular files are opened. A named pipe
  would block the reader forever, a broken symbolic link or a link loop has
  nothing to read, a device is not an image; a file without read permission
  is reported as such.
* :func:`check_pixel_limit` / :func:`raster_header_size`: the image size is
  read from the header (Pillow's format plugins for JPEG, PNG and BMP parse
  only the header; tifffile reads only the IFDs of a TIFF) and compared with
  the pixel limit (``--max-pixels``, default :data:`DEFAULT_MAX_PIXELS`), so a
  decompression bomb is refused before it is decoded.
* :func:`sniff_format`: the format from the magic bytes, never the extension.
* :func:`extension_note`: the format comes from the content; a known image
  extension that says otherwise (a PNG named ``.jpg``) becomes a note.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from PIL import BmpImagePlugin, Image, ImageFile, JpegImagePlugin, PngImagePlugin

from smearscan.errors import (
    CorruptImageError,
    ImageTooLargeError,
    InputError,
    UnsupportedFormatError,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 2_500_000_000
"""Default pixel limit (width x height of level 0): about a 50000 x 50000 scan."""

SUPPORTED_FORMATS: tuple[str, ...] = ("jpeg", "png", "bmp", "tiff")
"""Formats :func:`~smearscan.slide_io.open_slide` reads (TIFF: tiled, pyramidal, BigTIFF, OME)."""

_MAGIC: dict[bytes, str] = {
    b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"II*\x00": "tiff",
    b"MM\x00*": "tiff", b"II+\x00": "tiff", b"MM\x00+": "tiff",
}  # fmt: skip
_OTHER_IMAGES: dict[bytes, str] = {
    b"GIF8": "GIF", b"\x00\x00\x00\x0cjP  ": "JPEG 2000", b"\xffO\xffQ": "JPEG 2000",
    b"ZISRAWFILE": "Zeiss CZI", b"\x89HDF": "HDF5", b"%PDF": "PDF document",
    b"PK\x03\x04": "ZIP archive",
}  # fmt: skip
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
HEADER_READERS: dict[str, type[ImageFile.ImageFile]] = {
    "jpeg": JpegImagePlugin.JpegImageFile,
    "png": PngImagePlugin.PngImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
}
"""Pillow's format plugin of each raster format (parses the header only)."""
HEADER_ERRORS: tuple[type[Exception], ...] = (
    SyntaxError, ValueError, OSError, EOFError, KeyError, IndexError, TypeError,
)  # fmt: skip
"""Exceptions Pillow's plugins raise on a bad header."""
_SUFFIXES: dict[str, frozenset[str]] = {
    "jpeg": frozenset({".jpg", ".jpeg", ".jpe", ".jfif"}),
    "png": frozenset({".png"}),
    "bmp": frozenset({".bmp", ".dib"}),
    "tiff": frozenset({".tif", ".tiff", ".btf", ".tf8", ".svs", ".ndpi", ".scn", ".qptiff"}),
}
_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def check_readable_file(path: Path) -> None:
    """Raise unless ``path`` is a regular file this process may read.

    Never opens anything but a regular file, so a FIFO cannot block the batch.

    Args:
        path: Absolute path of the input (symbolic links are followed).

    Raises:
        InputError: Missing, a broken symbolic link, a symbolic link loop, a
            directory, a FIFO/socket/device, or not readable (permission denied).
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(path, "symbolic link loop; nothing to read") from exc
        if os.path.islink(path):
            target = os.readlink(path)
            raise InputError(path, f"broken symbolic link (target {target!r} not found)") from exc
        if exc.errno == errno.EACCES:
            raise InputError(path, "permission denied; cannot look at the file") from exc
        raise InputError(path, f"file not found ({exc.strerror})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise InputError(path, "is a directory; expected an image file")
    for test, kind in _SPECIAL_KINDS:
        if test(info.st_mode):
            raise InputError(path, f"is {kind}, not a regular image file; skipped unread")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(path, "not a regular file; skipped unread")
    try:
        with path.open("rb"):
            pass
    except PermissionError as exc:
        raise InputError(
            path, "permission denied; make the file readable by the user running smearscan"
        ) from exc


def raster_header_size(path: Path, fmt: str) -> tuple[int, int]:
    """``(width, height)`` in pixels claimed by a JPEG, PNG or BMP header; no pixel decoded.

    Pillow's format plugin parses the header without Pillow's own
    decompression-bomb check, so the size can be compared with the
    configured limit first.

    Raises:
        CorruptImageError: The header cannot be parsed.
    """
    reader = HEADER_READERS[fmt]
    try:
        with path.open("rb") as fh:
            image = reader(fh)
            try:
                return int(image.size[0]), int(image.size[1])
            finally:
                image.close()
    except HEADER_ERRORS as exc:
        raise CorruptImageError(path, f"cannot read {fmt.upper()} header: {exc}") from exc


def check_pixel_limit(
    path: Path, fmt: str, width: int, height: int, max_pixels: int | None
) -> None:
    """Refuse an image whose claimed size exceeds ``max_pixels``.

    Args:
        path: The file (for the message).
        fmt: Its format (``jpeg``, ``png``, ``bmp``, ``tiff``).
        width: Claimed width in pixels.
        height: Claimed height in pixels.
        max_pixels: Largest ``width * height`` accepted; None: no limit.

    Raises:
        CorruptImageError: A zero or negative dimension.
        ImageTooLargeError: ``width * height > max_pixels``.
    """
    if width <= 0 or height <= 0:
        raise CorruptImageError(path, f"{fmt.upper()} header claims a {width} x {height} image")
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(
            path,
            f"{fmt.upper()} header claims {width} x {height} = {pixels:,} pixels, over the "
            f"limit of {max_pixels:,} (--max-pixels); refused before decoding (a possible "
            "decompression bomb); raise --max-pixels if the scan is genuine",
        )


def raster_decode_limit() -> int | None:
    """Pixels above which Pillow refuses to decode a raster image (twice its warning limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def extension_note(path: Path, fmt: str) -> str | None:
    """A note when a known image extension disagrees with the content (``fmt``), else None."""
    suffix = path.suffix.lower()
    if suffix in _SUFFIXES[fmt]:
        return None
    for other, suffixes in _SUFFIXES.items():
        if suffix in suffixes:
            return f"content is {fmt.upper()} although the extension {suffix} says {other.upper()}"
    return None


# ----------------------------------------------------------------------------- detection


def sniff_format(path: Path) -> str:
    """Return the format (one of :data:`SUPPORTED_FORMATS`) from the file's first bytes.

    Raises:
        CorruptImageError: The file is empty.
        UnsupportedFormatError: Another image format, or not an image at all.
    """
    with path.open("rb") as fh:
        head = fh.read(512)
    if not head:
        raise CorruptImageError(path, "empty file (0 bytes)")
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "bmp"
    supported = ", ".join(SUPPORTED_FORMATS)
    for magic, name in _OTHER_IMAGES.items():
        if head.startswith(magic):
            raise UnsupportedFormatError(path, f"{name} is not supported; supported: {supported}")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise UnsupportedFormatError(path, f"WebP is not supported; supported: {supported}")
    if _looks_like_text(head):
        kind = "looks like a text file"
    else:
        kind = f"unrecognised content (starts with {head[:8].hex(' ')})"
    raise UnsupportedFormatError(path, f"not an image: {kind}; supported: {supported}")


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a multi-byte character cut at the end
    return True
