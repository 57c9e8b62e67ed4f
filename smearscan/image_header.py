"""What an image file's header claims, checked before any pixel is decoded or the file hashed.

:func:`check_header` reads only the header (Pillow's format plugins for JPEG,
PNG and BMP; tifffile's IFDs for TIFF) and refuses, without reading the rest
of the file:

* an unreadable or invalid header (:class:`~smearscan.errors.CorruptImageError`,
  :class:`~smearscan.errors.UnsupportedFormatError`);
* more than ``max_pixels`` pixels (:class:`~smearscan.errors.ImageTooLargeError`);
* a file far larger than any encoding of the pixels its header claims
  (:class:`~smearscan.errors.CorruptImageError`): at most
  :data:`MAX_ENCODED_BYTES_PER_PIXEL` bytes per pixel (per frame of an APNG)
  for JPEG, PNG and BMP; for TIFF every page at its uncompressed size,
  doubled; plus :data:`SIZE_SLACK_BYTES` of metadata. A small image header
  followed by gigabytes of padding (a sparse file, a copy gone wrong) so
  costs one header read, not a night of hashing and decoding.

The :class:`ImageHeader` it returns also says what decoding a JPEG, PNG or
BMP whole costs (:attr:`ImageHeader.decode_bytes`), so the memory limit can
be checked before the decode (:func:`smearscan.limits.check_decode_memory`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import tifffile

from smearscan.errors import CorruptImageError
from smearscan.input_checks import (
    HEADER_ERRORS,
    HEADER_READERS,
    check_pixel_limit,
    check_readable_file,
    sniff_format,
)

logger = logging.getLogger(__name__)

MAX_ENCODED_BYTES_PER_PIXEL = 16
"""Most bytes one pixel of a JPEG, PNG or BMP frame can take in a file: 4 samples of 16
bits (8 bytes), doubled for the worst entropy coding and container overhead."""

SIZE_SLACK_BYTES = 64 << 20
"""Bytes a file may hold beyond its pixels' largest encoding (headers, EXIF, ICC, XMP)."""

MAX_TIFF_PAGES_CHECKED = 4096
"""TIFF pages (IFDs) added up for the size check; a TIFF with more is not judged by size."""

_GIB = float(1 << 30)
_MIB = float(1 << 20)
_TIFF_HEADER_ERRORS: tuple[type[Exception], ...] = (
    tifffile.TiffFileError,
    IndexError,
    *HEADER_ERRORS,
)
_WIDE_MODES = frozenset({"P", "PA", "RGBA", "CMYK", "LA"})  # decoded or converted to 4 samples
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}  # IHDR colour type -> samples OpenCV returns


@dataclass(frozen=True)
class ImageHeader:
    """The size an image file claims in its header.

    Attributes:
        path: The file.
        format: ``jpeg``, ``png``, ``bmp`` or ``tiff`` (magic bytes).
        width: Level-0 width, pixels.
        height: Level-0 height, pixels.
        channels: Samples per pixel the decoder returns (JPEG/PNG/BMP; 0 for TIFF).
        bytes_per_sample: Bytes per decoded sample (1, or 2 for a 16-bit PNG).
        file_bytes: Size of the file, bytes.
        max_file_bytes: The largest file size the header makes plausible, bytes.
        frames: Frames of an animated PNG (1 otherwise).
        series: Image series of a TIFF (1 otherwise).
    """

    path: Path
    format: str
    width: int
    height: int
    channels: int
    bytes_per_sample: int
    file_bytes: int
    max_file_bytes: int
    frames: int = 1
    series: int = 1

    @property
    def decoded_whole(self) -> bool:
        """Whether opening decodes the whole image at once (JPEG, PNG, BMP; TIFF is lazy)."""
        return self.format != "tiff"

    @property
    def decode_bytes(self) -> int:
        """Peak bytes of decoding a JPEG/PNG/BMP whole (0 for a TIFF, read chunk by chunk).

        The file's bytes (read into memory), the decoder's array
        (``width * height * channels * bytes_per_sample``), a second array of
        that size (channel reordering, EXIF rotation, palette expansion) and the
        8-bit RGB result (``width * height * 3``).
        """
        if not self.decoded_whole:
            return 0
        pixels = self.width * self.height
        decoded = pixels * max(self.channels, 1) * self.bytes_per_sample
        return self.file_bytes + 2 * decoded + 3 * pixels


def check_header(path: Path, max_pixels: int | None) -> ImageHeader:
    """Read and check an image's header, never its pixel data.

    Args:
        path: Absolute path of the file.
        max_pixels: Largest ``width * height`` of level 0 accepted (None: no limit).

    Returns:
        What the header claims.

    Raises:
        InputError: Not a readable regular file.
        UnsupportedFormatError: Not a supported image format.
        CorruptImageError: Invalid header, or the file is far larger than its image.
        ImageTooLargeError: More than ``max_pixels`` pixels.
    """
    check_readable_file(path)
    fmt = sniff_format(path)
    header = _tiff_header(path) if fmt == "tiff" else _raster_header(path, fmt)
    check_pixel_limit(path, fmt, header.width, header.height, max_pixels)
    if header.file_bytes > header.max_file_bytes:
        raise CorruptImageError(
            path,
            f"file is {header.file_bytes / _GIB:.2f} GiB but its {fmt.upper()} header claims "
            f"{_claimed(header)}, which no encoding makes larger than "
            f"{header.max_file_bytes / _MIB:.0f} MiB; the file is padded or damaged "
            "(a sparse or half-copied file?); refused unread",
        )
    return header


def _claimed(header: ImageHeader) -> str:
    frames = f" in {header.frames} frames" if header.frames > 1 else ""
    return f"a {header.width} x {header.height} image{frames}"


def _raster_header(path: Path, fmt: str) -> ImageHeader:
    """The header of a JPEG, PNG or BMP (Pillow's plugin parses only the header)."""
    reader = HEADER_READERS[fmt]
    try:
        with path.open("rb") as fh:
            image = reader(fh)
            try:
                width, height = int(image.size[0]), int(image.size[1])
                channels = 4 if image.mode in _WIDE_MODES else len(image.getbands())
                frames = max(1, int(getattr(image, "n_frames", 1))) if fmt == "png" else 1
                depth = 1
                if fmt == "png":
                    fh.seek(24)
                    bit_depth, colour = fh.read(2)
                    depth = 2 if bit_depth == 16 else 1
                    channels = _PNG_CHANNELS.get(colour, 4)
                    if colour == 3 and "transparency" in image.info:
                        channels = 4
            finally:
                image.close()
    except HEADER_ERRORS as exc:
        raise CorruptImageError(path, f"cannot read {fmt.upper()} header: {exc}") from exc
    encoded = frames * max(width, 0) * max(height, 0) * MAX_ENCODED_BYTES_PER_PIXEL
    return ImageHeader(
        path, fmt, width, height, max(channels, 1), depth, path.stat().st_size,
        encoded + SIZE_SLACK_BYTES, frames=frames,
    )  # fmt: skip


def _tiff_header(path: Path) -> ImageHeader:
    """The header of a TIFF: level 0 of series 0, and every page's uncompressed size."""
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            try:
                level = tif.series[0].levels[0]
            except _TIFF_HEADER_ERRORS as exc:
                raise CorruptImageError(path, f"TIFF holds no readable image: {exc}") from exc
            if "Y" not in level.axes or "X" not in level.axes:
                height, width = 1, 1  # _tiff_to_rgb refuses it with the axes named
            else:
                height = int(level.shape[level.axes.index("Y")])
                width = int(level.shape[level.axes.index("X")])
            raw, judged = 0, True
            for index, page in enumerate(tif.pages):
                if index >= MAX_TIFF_PAGES_CHECKED:
                    judged = False
                    break
                raw += math.prod(page.shape) * page.dtype.itemsize if page.dtype else 0
            series = len(tif.series)
    except _TIFF_HEADER_ERRORS as exc:
        raise CorruptImageError(path, f"cannot read TIFF structure: {exc}") from exc
    limit = 2 * raw + SIZE_SLACK_BYTES if judged else size
    return ImageHeader(path, "tiff", width, height, 0, 1, size, limit, series=series)
