"""Open smear images lazily as Dask arrays, and list the input files of a batch.

Every image becomes a :class:`Slide` whose ``array`` is a lazy
``(height, width, 3)`` ``uint8`` RGB ``dask.array`` chunked about 2048 x 2048;
nothing is decoded that a computation does not ask for. The format comes from
the magic bytes, never the extension.

* TIFF (plain, tiled, pyramidal, BigTIFF, OME-TIFF, SVS): series 0, level 0,
  through tifffile's Zarr store and ``dask.array.from_zarr`` (uncompressed
  contiguous data is memory-mapped instead); computing a slice decodes only the
  tiles/strips it touches; axis reordering and conversions run per chunk.
* JPEG, PNG, BMP: validated (truncation detected), decoded once at open and
  wrapped in a Dask array; limited to Pillow's decompression-bomb limit
  (about 179 megapixels): convert larger scans to tiled TIFF.

Before anything is decoded, :mod:`smearscan.input_checks` refuses what is not
a readable regular file (FIFO, broken link, link loop, no permission) and any
image whose header claims more than ``max_pixels`` pixels (decompression bombs).

Conversions to 8-bit RGB (listed in ``Slide.notes``) and the pixel-size rule
are documented in :mod:`smearscan.image_decode`: a metadata pixel size is kept
only within 0.01-10 µm, so the 72/96/300 dpi of ordinary images give ``None``.

Thread safety: TIFF chunks are read under tifffile's file-handle lock, so a
slide may be computed with the threaded scheduler or from several threads.
:meth:`Slide.close` (or ``with``) releases the file; a pickled slide re-opens
its path on the other side.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import dask.array as da
import numpy as np
import numpy.typing as npt
from PIL import Image

from smearscan.errors import CorruptImageError, InputError
from smearscan.image_decode import (
    CHUNK_PIXELS,
    DECODE_ERRORS,
    Closable,
    DecodedImage,
    conversion_notes,
    dask_name,
    decode_tiff,
    pixel_size_from_density,
    to_rgb8,
)
from smearscan.image_header import check_header
from smearscan.input_checks import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_FORMATS,
    check_pixel_limit,
    extension_note,
    raster_header_size,
    sniff_format,
)
from smearscan.inputs import SIDECAR_SUFFIXES, SlideSource, list_inputs  # noqa: F401
from smearscan.orientation import apply_orientation, exif_orientation, orientation_note

logger = logging.getLogger(__name__)

__all__ = ["SUPPORTED_FORMATS", "Slide", "SlideSource", "list_inputs", "open_slide", "read_region",
           "sniff_format"]  # fmt: skip

_PILLOW_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "I", "F"})
_PAD_MODES = ("reflect", "symmetric", "edge", "constant")


@dataclass(eq=False)
class Slide:
    """An opened smear image.

    Attributes:
        path: Absolute path of the file.
        array: Lazy ``(height, width, 3)`` ``uint8`` RGB Dask array, level 0.
        width: Image width in pixels (columns, x).
        height: Image height in pixels (rows, y).
        format: One of :data:`SUPPORTED_FORMATS`, from the magic bytes.
        pixel_size_um: Pixel size in µm per pixel from the file's metadata, or
            ``None`` when absent or implausible (rule in :mod:`smearscan.image_decode`).
        notes: Conversions applied to reach 8-bit RGB (e.g. ``"16-bit scaled to 8-bit"``).
        levels: Pyramid levels in the file (1 when not pyramidal); only level 0 is read.
    """

    path: Path
    array: da.Array
    width: int
    height: int
    format: str
    pixel_size_um: float | None = None
    notes: list[str] = field(default_factory=list)
    levels: int = 1
    _resources: list[Closable] = field(default_factory=list, repr=False)
    _region_array: da.Array | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Release the open file (idempotent); ``array`` cannot be computed afterwards."""
        self._closed = True
        while self._resources:
            self._resources.pop().close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[Path, None]]:
        """Pickle as "open this path again" (open file handles cannot travel); the file
        passed the pixel limit when first opened, so it is not checked again."""
        return (open_slide, (self.path, None))


# ----------------------------------------------------------------------------- opening


def open_slide(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Slide:
    """Open an image file lazily as a :class:`Slide`.

    Args:
        path: Image file (JPEG, PNG, BMP or TIFF, whatever its extension).
        max_pixels: Largest width x height (level 0) accepted, checked from the
            header before decoding; None: no limit.

    Returns:
        The opened slide; close it (or use ``with``) when done.

    Raises:
        InputError: The path does not exist, is a directory, a FIFO, a broken
            link or a link loop, or cannot be read.
        ImageTooLargeError: The header claims more than ``max_pixels`` pixels.
        UnsupportedFormatError: Not an image, or a format not in :data:`SUPPORTED_FORMATS`.
        CorruptImageError: Empty, truncated or undecodable file, or one far larger than
            the image its header claims (:func:`smearscan.image_header.check_header`).
    """
    path = Path(path).absolute()
    header = check_header(path, max_pixels)
    fmt = header.format
    if fmt == "tiff":
        decoded = decode_tiff(path, max_pixels)
    else:
        decoded = decode_raster(path, fmt, max_pixels)
    note = extension_note(path, fmt)
    if note is not None:
        decoded.notes.insert(0, note)
    height, width = int(decoded.array.shape[0]), int(decoded.array.shape[1])
    slide = Slide(path, decoded.array, width, height, fmt, decoded.pixel_size_um,
                  decoded.notes, decoded.levels, decoded.resources,
                  decoded.region_array)  # fmt: skip
    for note in slide.notes:
        logger.info("%s: %s", path, note)
    logger.debug(
        "opened %s: %s %dx%d, %d level(s), pixel size %s um, notes %s",
        path, fmt, slide.width, slide.height, slide.levels, slide.pixel_size_um, slide.notes,
    )  # fmt: skip
    return slide


# ----------------------------------------------------------------------------- JPEG, PNG, BMP


def decode_raster(
    path: Path, fmt: str, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Validate and decode a whole JPEG, PNG or BMP file.

    The header size is checked against ``max_pixels`` first. Truncation is
    detected by Pillow (``load()`` for JPEG/BMP, ``verify()`` which checks
    every chunk CRC and the end marker for PNG). PNG pixels are then decoded
    by OpenCV to keep 16-bit samples (BGR reordered to RGB). The EXIF
    orientation (JPEG APP1, PNG ``eXIf``) is applied
    (:mod:`smearscan.orientation`); an animated PNG gives its first frame.
    Both are listed in ``notes``.

    Args:
        path: The file; fmt: ``jpeg``, ``png`` or ``bmp`` (from the magic bytes).
        max_pixels: Largest width x height accepted (None: no limit).

    Raises:
        ImageTooLargeError: The header claims more than ``max_pixels`` pixels.
        InputError: Larger than Pillow's decompression-bomb limit.
        CorruptImageError: Truncated or undecodable.
    """
    check_pixel_limit(path, fmt, *raster_header_size(path, fmt), max_pixels)
    data = path.read_bytes()
    label = fmt.upper()
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode, (width, height) = image.mode, image.size
            dpi = image.info.get("dpi")
            orientation = exif_orientation(image.info)
            frames = int(getattr(image, "n_frames", 1))
            if fmt == "png":
                image.verify()
                pixels, notes = _decode_png(path, data, mode)
            else:
                image.load()  # raises on truncation unless ImageFile.LOAD_TRUNCATED_IMAGES
                pixels, notes = _pillow_pixels(image)
    except Image.DecompressionBombError as exc:
        reason = (
            f"{label} too large to decode whole in memory ({exc}); convert it to a tiled TIFF, "
            "which is read tile by tile"
        )
        raise InputError(path, reason) from exc
    except DECODE_ERRORS as exc:
        raise CorruptImageError(path, f"cannot decode {label}: {exc}") from exc
    if pixels.shape[:2] != (height, width):
        raise CorruptImageError(path, f"decoded size {pixels.shape[:2]} differs from the header")
    if frames > 1:
        notes.append(f"animated PNG (APNG) of {frames} frames: only the first frame used")
    note = orientation_note(orientation)
    if note is not None:
        notes.append(note)
    rgb = to_rgb8(apply_orientation(pixels, orientation))
    array = da.from_array(rgb, chunks=(CHUNK_PIXELS, CHUNK_PIXELS, 3), name=dask_name(path, fmt))
    pixel_size = None
    if isinstance(dpi, tuple) and dpi:
        pixel_size = pixel_size_from_density(float(dpi[0]), "inch")
    return DecodedImage(array, notes, pixel_size)


def _pillow_pixels(image: Image.Image) -> tuple[npt.NDArray[Any], list[str]]:
    """Pixels of a loaded Pillow image as ``(h, w, c)`` plus conversion notes."""
    notes: list[str] = []
    if image.mode in ("P", "PA"):
        alpha = "transparency" in image.info or image.mode == "PA"
        image = image.convert("RGBA" if alpha else "RGB")
        notes.append("palette expanded to RGB")
    elif image.mode not in _PILLOW_MODES and not image.mode.startswith("I;16"):
        notes.append(f"{image.mode} converted to RGB")
        image = image.convert("RGB")
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    notes.extend(conversion_notes(pixels.dtype, pixels.shape[-1]))
    return pixels, notes


def _decode_png(path: Path, data: bytes, mode: str) -> tuple[npt.NDArray[Any], list[str]]:
    """Decode a verified PNG with OpenCV (keeps 16-bit samples), channels in RGB order."""
    try:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV's own limits (CV_IO_MAX_IMAGE_PIXELS) or bad data
        raise CorruptImageError(path, f"cannot decode PNG: OpenCV: {exc.msg}") from exc
    if pixels is None:
        raise CorruptImageError(path, "cannot decode PNG: OpenCV could not read the pixel data")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    elif pixels.shape[-1] == 3:
        pixels = pixels[..., ::-1]
    elif pixels.shape[-1] == 4:
        pixels = pixels[..., [2, 1, 0, 3]]
    if mode in ("P", "PA"):
        notes = ["palette expanded to RGB"]
        if pixels.shape[-1] == 4:
            notes.append("alpha composited on white")
        return pixels, notes
    return pixels, conversion_notes(pixels.dtype, pixels.shape[-1])


# ----------------------------------------------------------------------------- regions


def _source_index(start: int, stop: int, size: int, mode: str) -> npt.NDArray[np.intp]:
    """Image index feeding each output position (``-1`` = outside, for ``constant``)."""
    index = np.arange(start, stop, dtype=np.intp)
    if mode == "constant":
        return np.where((index >= 0) & (index < size), index, -1)
    if mode == "edge" or size == 1:
        return np.clip(index, 0, size - 1)
    if mode == "reflect":
        period = 2 * (size - 1)
        index = np.mod(index, period)
        return np.where(index >= size, period - index, index)
    period = 2 * size  # symmetric
    index = np.mod(index, period)
    return np.where(index >= size, period - 1 - index, index)


def read_region(
    slide: Slide, y0: int, y1: int, x0: int, x1: int, pad_mode: str = "reflect"
) -> npt.NDArray[np.uint8]:
    """Read a window of the slide, padding where it extends past the image.

    The result equals ``numpy.pad(full_image, ..., mode=pad_mode)`` cropped to
    the window, for windows of any size and position. Only the stored TIFF
    tiles/strips under the window (and, for padding, under its mirror image)
    are decoded: TIFF windows are read through a view chunked like the file
    (about 256 pixels), not through ``slide.array``'s ~2048-pixel chunks. Runs
    with Dask's synchronous scheduler in the calling thread, so it is safe to
    call from many worker threads at once.

    Args:
        slide: An open slide.
        y0: First row (may be negative).
        y1: Row after the last (may exceed ``slide.height``); ``y1 > y0``.
        x0: First column (may be negative).
        x1: Column after the last (may exceed ``slide.width``); ``x1 > x0``.
        pad_mode: ``reflect`` (default), ``symmetric``, ``edge`` or ``constant``
            (zeros), with NumPy's meaning; a 1-pixel axis pads as ``edge``.

    Returns:
        ``(y1 - y0, x1 - x0, 3)`` ``uint8`` RGB array.

    Raises:
        ValueError: Empty window, unknown ``pad_mode`` or closed slide.
        CorruptImageError: The image data under the window cannot be decoded.
    """
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"empty window rows {y0}:{y1}, columns {x0}:{x1}")
    if pad_mode not in _PAD_MODES:
        raise ValueError(f"pad_mode must be one of {_PAD_MODES}, got {pad_mode!r}")
    if slide._closed:
        raise ValueError(f"{slide.path}: slide is closed; open it again")
    rows = _source_index(y0, y1, slide.height, pad_mode)
    cols = _source_index(x0, x1, slide.width, pad_mode)
    out = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    row_ok, col_ok = rows >= 0, cols >= 0
    if not row_ok.any() or not col_ok.any():
        return out
    r_lo, r_hi = int(rows[row_ok].min()), int(rows[row_ok].max()) + 1
    c_lo, c_hi = int(cols[col_ok].min()), int(cols[col_ok].max()) + 1
    try:
        source = slide.array if slide._region_array is None else slide._region_array
        block = np.asarray(source[r_lo:r_hi, c_lo:c_hi].compute(scheduler="synchronous"))
    except DECODE_ERRORS as exc:
        raise CorruptImageError(slide.path, f"cannot decode region: {exc}") from exc
    if y0 >= 0 and y1 <= slide.height and x0 >= 0 and x1 <= slide.width:
        return np.ascontiguousarray(block)
    picked = block[(rows[row_ok] - r_lo)[:, None], (cols[col_ok] - c_lo)[None, :]]
    out[np.ix_(row_ok, col_ok)] = picked
    return out
