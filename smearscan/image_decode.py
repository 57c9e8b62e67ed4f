"""Pixel conversions, the pixel-size rule and the lazy TIFF reader behind :mod:`smearscan.slide_io`.

A decoder returns a :class:`DecodedImage` whose ``array`` is a lazy
``(height, width, 3)`` ``uint8`` RGB Dask array. The pixel conversions are pure
NumPy on one block: applied eagerly to a decoded JPEG/PNG/BMP, lazily per
chunk (``map_blocks``) to a TIFF.

Conversion rules (listed in ``notes``):

* ``uint16``: ``round(v * 255 / 65535)`` (no auto-contrast, so every chunk of a
  slide is converted identically; 12-bit data stored in 16 bits looks dark);
  other integers: negatives clipped, scaled by the dtype maximum; ``bool``:
  0/255; floating point: assumed in ``[0, 1]``, clipped, NaN as 0.
* 1 channel: replicated to RGB; 2 (gray + alpha) and 4 (RGBA) channels:
  composited on white; more than 4: the first 3 used.
* TIFF ``Orientation`` tag: applied lazily (:mod:`smearscan.orientation`);
  more than one image series: series 0 used, the others noted.
* palette: expanded through the colormap; TIFF "min-is-white": inverted;
  TIFF CMYK ("separated", 4 inks): ``R = (255 - C) * (255 - K) / 255`` etc.
  (no ICC profile; extra samples ignored); CMYK/YCbCr/other Pillow modes of
  JPEG/BMP: converted to RGB by Pillow.

The pixel limit (``max_pixels``) is checked from the level-0 shape that
tifffile reads from the IFDs, before any strip or tile is decoded.

Pixel-size rule (:func:`plausible_pixel_size_um`): a metadata pixel size is
kept only within :data:`PLAUSIBLE_PIXEL_SIZE_UM` (0.01 to 10 µm per pixel,
microscope cameras and slide scanners). The 72/96/300/600/1200 dpi written by
ordinary image software (353 to 21 µm per pixel) give ``None`` ("unknown").
Sources, most trusted first: OME ``PhysicalSizeX`` (+unit), Aperio ``MPP``,
TIFF ``XResolution``/``ResolutionUnit`` (inch, cm; ImageJ ``unit`` when the
TIFF unit is "none"), JPEG/PNG/BMP dpi.
"""

from __future__ import annotations

import contextlib
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import dask.array as da
import numpy as np
import numpy.typing as npt
import tifffile
import zarr
from dask.base import tokenize

from smearscan.errors import CorruptImageError, UnsupportedFormatError
from smearscan.input_checks import DEFAULT_MAX_PIXELS, check_pixel_limit
from smearscan.orientation import apply_orientation, orientation_note

logger = logging.getLogger(__name__)

CHUNK_PIXELS = 2048
"""Target edge length (pixels) of the Dask chunks of a slide."""

REGION_CHUNK_PIXELS = 256
"""Target chunk edge (pixels) of the fine-chunked TIFF view used by ``read_region``."""

PLAUSIBLE_PIXEL_SIZE_UM: tuple[float, float] = (0.01, 10.0)
"""Inclusive range (µm per pixel) of metadata pixel sizes that are believed."""

DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError, RuntimeError, OSError, KeyError, EOFError, SyntaxError, TypeError,
)  # fmt: skip
"""Exceptions that decoders (Pillow, OpenCV, tifffile, imagecodecs, zarr) raise on bad data."""

_TIFF_ERRORS: tuple[type[Exception], ...] = (tifffile.TiffFileError, IndexError, *DECODE_ERRORS)
_UM_PER_UNIT = {"inch": 25400.0, "cm": 1e4, "mm": 1e3, "um": 1.0, "µm": 1.0, "micron": 1.0,
                "nm": 1e-3, "m": 1e6}  # fmt: skip
_TIFF_UNITS = {2: "inch", 3: "cm", 4: "mm", 5: "um"}
_TIFF_PHOTOMETRIC = frozenset({"MINISWHITE", "MINISBLACK", "RGB", "PALETTE", "YCBCR", "SEPARATED"})


class Closable(Protocol):
    """Anything holding an open file."""

    def close(self) -> None:
        """Release it."""


@dataclass
class DecodedImage:
    """What a decoder hands to :class:`smearscan.slide_io.Slide`.

    Attributes:
        array: Lazy ``(height, width, 3)`` ``uint8`` RGB Dask array.
        notes: Conversions applied.
        pixel_size_um: Metadata pixel size (µm per pixel) after the plausibility rule, or None.
        levels: Pyramid levels in the file.
        resources: Open files/stores the array reads from; close them when done.
        region_array: The same pixels in chunks near the stored tiles, for reading
            small windows without decoding whole ~2048-pixel chunks (None: use ``array``).
    """

    array: da.Array
    notes: list[str]
    pixel_size_um: float | None = None
    levels: int = 1
    resources: list[Closable] = field(default_factory=list)
    region_array: da.Array | None = None


# ----------------------------------------------------------------------------- pixel size


def um_per_unit(unit: str) -> float | None:
    """Micrometres in one ``unit`` (inch, cm, mm, um/µm/micron, nm, m); None if unknown."""
    return _UM_PER_UNIT.get(unit.strip().lower().replace("\u03bc", "\u00b5"))


def plausible_pixel_size_um(size_um: float | None) -> float | None:
    """Return ``size_um`` (µm per pixel) if within :data:`PLAUSIBLE_PIXEL_SIZE_UM`, else None."""
    if size_um is None or not np.isfinite(size_um):
        return None
    low, high = PLAUSIBLE_PIXEL_SIZE_UM
    if low <= size_um <= high:
        return float(size_um)
    logger.debug("ignoring metadata pixel size %.4g um (implausible)", size_um)
    return None


def pixel_size_from_density(pixels_per_unit: float, unit: str) -> float | None:
    """Pixel size (µm) from a density such as dpi, after the plausibility rule.

    Args:
        pixels_per_unit: Pixels per ``unit`` (e.g. dots per inch).
        unit: Length unit (see :func:`um_per_unit`).

    Returns:
        µm per pixel, or None when unknown or implausible.
    """
    factor = um_per_unit(unit)
    if factor is None or not pixels_per_unit or pixels_per_unit <= 0:
        return None
    return plausible_pixel_size_um(factor / float(pixels_per_unit))


# ----------------------------------------------------------------------------- conversions


def conversion_notes(
    dtype: np.dtype,
    channels: int,
    *,
    palette: bool = False,
    invert: bool = False,
    cmyk: bool = False,
) -> list[str]:
    """Describe what :func:`to_rgb8` does to samples of ``dtype`` with ``channels`` channels."""
    notes: list[str] = []
    if palette:
        return ["palette expanded to RGB"]
    if cmyk:
        channels = 3
        notes.append("CMYK converted to RGB (no colour profile)")
    if dtype == np.uint16:
        notes.append("16-bit scaled to 8-bit")
    elif dtype.kind == "f":
        notes.append(f"{dtype.name} assumed in [0, 1], scaled to 8-bit (NaN as 0)")
    elif dtype.kind == "b":
        notes.append("binary image scaled to 0/255")
    elif dtype != np.uint8:
        notes.append(f"{dtype.name} scaled to 8-bit")
    if invert:
        notes.append("min-is-white inverted")
    if channels in (1, 2):
        notes.append("grayscale replicated to RGB")
    if channels in (2, 4):
        notes.append("alpha composited on white")
    if channels > 4:
        notes.append(f"{channels} channels: first 3 used as RGB")
    return notes


def scale_to_uint8(block: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Scale samples of any numeric dtype to ``uint8``, same shape (module rules)."""
    dtype = block.dtype
    if dtype == np.uint8:
        return block.astype(np.uint8, copy=False)
    if dtype.kind == "b":
        return block.astype(np.uint8) * np.uint8(255)
    if dtype.kind == "f":  # NaN (no value) as 0, not an undefined cast
        values = np.nan_to_num(block.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    if dtype.kind in "ui":
        top = float(np.iinfo(cast(Any, dtype)).max)
        values = np.clip(block.astype(np.float64), 0.0, top)
        return np.rint(values * (255.0 / top)).astype(np.uint8)
    raise TypeError(f"cannot convert samples of dtype {dtype} to 8-bit")


def composite_on_white(
    color: npt.NDArray[np.uint8], alpha: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    """``(h, w, c)`` ``uint8`` colour over white with ``(h, w)`` ``uint8`` alpha (255 opaque)."""
    a = alpha.astype(np.uint32)[..., None]
    return ((color.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def cmyk_to_rgb(data: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``(h, w, >=4)`` ``uint8`` CMYK (255 = full ink) to ``(h, w, 3)`` RGB, no colour profile."""
    ink = 255 - data[..., :4].astype(np.uint32)
    rgb = (ink[..., :3] * ink[..., 3:4] + 127) // 255
    return np.ascontiguousarray(rgb.astype(np.uint8))


def to_rgb8(
    block: npt.NDArray[Any],
    colormap: npt.NDArray[np.uint8] | None = None,
    invert: bool = False,
    cmyk: bool = False,
) -> npt.NDArray[np.uint8]:
    """Convert one block to 8-bit RGB.

    Args:
        block: ``(h, w, c)`` samples of any numeric dtype, channels last.
        colormap: ``(n, 3)`` ``uint8`` palette; when given ``block[..., 0]`` holds indices.
        invert: Invert after scaling ("min-is-white").
        cmyk: The first 4 channels are C, M, Y, K inks (``c >= 4``).

    Returns:
        ``(h, w, 3)`` ``uint8`` RGB.
    """
    if colormap is not None:
        index = np.clip(block[..., 0].astype(np.intp), 0, len(colormap) - 1)
        return np.ascontiguousarray(colormap[index])
    data = scale_to_uint8(block)
    if cmyk:
        return cmyk_to_rgb(data)
    if invert:
        data = np.uint8(255) - data
    channels = data.shape[-1]
    if channels == 1:
        return np.repeat(data, 3, axis=-1)
    if channels == 2:
        return np.repeat(composite_on_white(data[..., :1], data[..., 1]), 3, axis=-1)
    if channels == 4:
        return composite_on_white(data[..., :3], data[..., 3])
    return np.ascontiguousarray(data[..., :3])


def colormap_to_uint8(colormap: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """``(3, n)`` TIFF colormap (16-bit, sometimes holding 8-bit values) to ``(n, 3)`` uint8."""
    table = np.asarray(colormap)
    if table.ndim == 2 and table.shape[0] == 3:
        table = table.T
    if table.max(initial=0) <= 255:
        return np.ascontiguousarray(table.astype(np.uint8))
    return scale_to_uint8(table.astype(np.uint16))


# ----------------------------------------------------------------------------- TIFF


def dask_name(path: Path, kind: str) -> str:
    """A Dask name unique to this file's content version (path, size, mtime, inode)."""
    stat = path.stat()
    return f"slide-{kind}-{tokenize(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)}"


def decode_tiff(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Open series 0, level 0 of a TIFF lazily (tifffile Zarr store or memory map).

    Refuses a level 0 of more than ``max_pixels`` pixels (None: no limit)
    from the IFDs alone. Validates at open that strip/tile offsets lie inside
    the file and decodes the bottom-right chunk, so truncated files and
    missing codecs fail here.

    Raises:
        ImageTooLargeError: Level 0 has more than ``max_pixels`` pixels.
        UnsupportedFormatError: Unsupported photometric (CIELab...), inks or axes.
        CorruptImageError: Damaged structure, truncated or undecodable data.
    """
    try:
        tif = tifffile.TiffFile(path)
    except _TIFF_ERRORS as exc:
        raise CorruptImageError(path, f"cannot read TIFF structure: {exc}") from exc
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(tif.close)
        decoded = _tiff_decoded(path, tif, max_pixels)
        for resource in decoded.resources[:-1]:  # the last one is tif
            cleanup.callback(resource.close)
        probe = decoded.array if decoded.region_array is None else decoded.region_array
        _probe_decode(path, probe)
        cleanup.pop_all()
    return decoded


def _tiff_decoded(path: Path, tif: tifffile.TiffFile, max_pixels: int | None) -> DecodedImage:
    """Build the lazy image of an open TIFF (the caller closes ``tif`` on error)."""
    try:
        series = tif.series[0]
        level = series.levels[0]
        page = level.keyframe
    except _TIFF_ERRORS as exc:
        raise CorruptImageError(path, f"TIFF holds no readable image: {exc}") from exc
    photometric = getattr(page.photometric, "name", str(page.photometric))
    if photometric not in _TIFF_PHOTOMETRIC:
        raise UnsupportedFormatError(path, f"TIFF photometric {photometric} is not supported")
    if "Y" in level.axes and "X" in level.axes:
        height, width = level.shape[level.axes.index("Y")], level.shape[level.axes.index("X")]
        check_pixel_limit(path, "tiff", int(width), int(height), max_pixels)
    _check_tiff_extent(path, level)
    raw, raw_fine, resources = _tiff_raw_array(path, series)
    array, notes = _tiff_to_rgb(path, raw, level.axes, page, photometric)
    fine = (
        array if raw_fine is raw else _tiff_to_rgb(path, raw_fine, level.axes, page, photometric)[0]
    )
    if len(tif.series) > 1:
        names = ", ".join(f"{s.name or s.kind} {'x'.join(map(str, s.shape))}" for s in tif.series)
        notes.append(f"TIFF holds {len(tif.series)} image series ({names}): only series 0 used")
    tag = page.tags.get("Orientation")
    code = int(tag.value) if tag is not None else 1
    array, fine = apply_orientation(array, code), apply_orientation(fine, code)
    notes += [n for n in [orientation_note(code, "TIFF")] if n is not None]
    pixel_size = _tiff_pixel_size(tif, page)
    return DecodedImage(array, notes, pixel_size, len(series.levels), [*resources, tif], fine)


def _check_tiff_extent(path: Path, level: tifffile.TiffPageSeries) -> None:
    """Raise CorruptImageError when strip/tile offsets point past the end of the file."""
    size = path.stat().st_size
    for index in range(min(len(level), 16)):
        page = level[index]
        if page is None:
            continue
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
        if ends and max(ends) > size:
            raise CorruptImageError(
                path, f"truncated TIFF: image data ends at byte {max(ends)} but the file has {size}"
            )


def _chunk_edge(stored: int, extent: int, target: int) -> int:
    """A chunk edge that is a multiple of the stored chunk and near ``target``."""
    if stored >= target:
        return min(stored, extent)
    return min(max(stored, target // stored * stored), extent)


def _tiff_raw_array(
    path: Path, series: tifffile.TiffPageSeries
) -> tuple[da.Array, da.Array, list[Closable]]:
    """Level-0 data as lazy Dask arrays in stored axis order (``series.levels[0].axes``).

    Returns the slide array (~CHUNK_PIXELS chunks), the same data in chunks
    near the stored tiles (REGION_CHUNK_PIXELS) for small windows, and the
    resources to close.
    """
    level = series.levels[0]
    axes, shape = level.axes, level.shape
    name = dask_name(path, "tiff")
    if level.dataoffset is not None and level.keyframe.is_memmappable:
        with contextlib.suppress(ValueError, OSError):
            mapped = tifffile.memmap(path, series=0, level=0, mode="r")
            if mapped.shape == shape:
                chunks = _raw_chunks(axes, shape, (1,) * len(shape), CHUNK_PIXELS)
                array = da.from_array(mapped, chunks=chunks, name=name)
                return array, array, []
    store = series.aszarr(level=0)
    try:
        stored = zarr.open_array(store=store, mode="r", zarr_format=2)
    except DECODE_ERRORS as exc:
        store.close()
        raise CorruptImageError(path, f"cannot open TIFF as Zarr: {exc}") from exc
    chunks = _raw_chunks(axes, stored.shape, stored.chunks, CHUNK_PIXELS)
    fine = _raw_chunks(axes, stored.shape, stored.chunks, REGION_CHUNK_PIXELS)
    array = da.from_zarr(stored, chunks=chunks, name=name)
    return array, da.from_zarr(stored, chunks=fine, name=f"{name}-fine"), [store]


def _raw_chunks(
    axes: str, shape: tuple[int, ...], stored: tuple[int, ...], target: int
) -> tuple[int, ...]:
    """Dask chunks: ~target^2 aligned to stored chunks in Y/X, channels whole, else 1."""
    chunks: list[int] = []
    x_edge = (
        _chunk_edge(stored[axes.index("X")], shape[axes.index("X")], target) if "X" in axes else 1
    )
    for axis, extent, size in zip(axes, shape, stored, strict=True):
        if axis == "X":
            chunks.append(x_edge)
        elif axis == "Y" and size >= target:
            chunks.append(min(size, extent))
        elif axis == "Y":
            rows = max(size, target * target // max(x_edge, 1))
            chunks.append(min(rows // size * size, extent))
        elif axis in "SC":
            chunks.append(extent)
        else:
            chunks.append(1)
    return tuple(chunks)


def _tiff_to_rgb(
    path: Path, raw: da.Array, axes: str, page: Any, photometric: str
) -> tuple[da.Array, list[str]]:
    """Reorder to ``(H, W, C)`` and convert lazily to ``uint8`` RGB."""
    if "Y" not in axes or "X" not in axes:
        raise UnsupportedFormatError(path, f"TIFF series axes {axes!r} have no Y and X")
    channel = "S" if "S" in axes else ("C" if "C" in axes else "")
    keep = {"Y", "X", channel} - {""}
    dropped = [ax for ax, n in zip(axes, raw.shape, strict=True) if ax not in keep and n > 1]
    data = raw[tuple(slice(None) if ax in keep else 0 for ax in axes)]
    rest = [ax for ax in axes if ax in keep]
    order = [rest.index("Y"), rest.index("X")] + ([rest.index(channel)] if channel else [])
    data = data.transpose(order)
    if not channel:
        data = data[..., None]
    notes = [f"first plane used along axes {''.join(dropped)}"] if dropped else []
    colormap = None
    if photometric == "PALETTE" and page.colormap is not None:
        colormap = colormap_to_uint8(page.colormap)
    invert = photometric == "MINISWHITE"
    cmyk = photometric == "SEPARATED"
    if cmyk:
        _check_cmyk(path, page, data.shape[-1])
    notes += conversion_notes(
        data.dtype, data.shape[-1], palette=colormap is not None, invert=invert, cmyk=cmyk
    )
    plain = colormap is None and not invert and not cmyk
    if data.dtype == np.uint8 and data.shape[-1] == 3 and plain:
        return data, notes
    rgb = data.map_blocks(
        to_rgb8,
        colormap=colormap,
        invert=invert,
        cmyk=cmyk,
        dtype=np.uint8,
        chunks=(*data.chunks[:2], (3,)),
    )
    return rgb, notes


def _check_cmyk(path: Path, page: Any, channels: int) -> None:
    """Raise UnsupportedFormatError unless a "separated" TIFF holds C, M, Y, K inks."""
    inkset = page.tags.get("InkSet")
    if (inkset is not None and int(inkset.value) != 1) or channels < 4:
        raise UnsupportedFormatError(
            path, f"TIFF separated into {channels} non-CMYK inks is not supported"
        )


def _probe_decode(path: Path, array: da.Array) -> None:
    """Decode the bottom-right chunk to catch damaged data and missing codecs at open."""
    chunk_bytes = int(np.prod([c[-1] for c in array.chunks])) * 8
    if chunk_bytes > 512 * 2**20:
        logger.debug("%s: chunk too large to probe at open", path)
        return
    try:
        array[-1:, -1:].compute(scheduler="synchronous")
    except DECODE_ERRORS as exc:
        raise CorruptImageError(path, f"cannot decode TIFF data: {exc}") from exc


def _tiff_pixel_size(tif: tifffile.TiffFile, page: Any) -> float | None:
    """Pixel size (µm) from OME, SVS, ImageJ or resolution tags, in that order of trust."""
    if tif.is_ome and tif.ome_metadata:
        size = _ome_pixel_size(tif.ome_metadata)
        if size is not None:
            return plausible_pixel_size_um(size)
    if tif.is_svs and isinstance(page.description, str) and "MPP = " in page.description:
        with contextlib.suppress(ValueError):
            text = page.description.split("MPP = ", 1)[1].split("|", 1)[0]
            return plausible_pixel_size_um(float(text))
    xres = page.tags.get("XResolution")
    if xres is None:
        return None
    value = xres.value
    density = value[0] / value[1] if isinstance(value, tuple) and value[1] else float(value)
    unit_tag = page.tags.get("ResolutionUnit")
    code = int(unit_tag.value) if unit_tag is not None else 2
    unit = _TIFF_UNITS.get(code)
    if unit is None and tif.is_imagej and tif.imagej_metadata:
        unit = str(tif.imagej_metadata.get("unit", ""))
    return pixel_size_from_density(density, unit) if unit else None


def _ome_pixel_size(xml: str) -> float | None:
    """PhysicalSizeX of the first OME ``Pixels`` element, in µm (``None`` if absent)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        logger.debug("unparsable OME-XML ignored")
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "Pixels":
            value = element.get("PhysicalSizeX")
            factor = um_per_unit(element.get("PhysicalSizeXUnit", "µm"))
            if value is None or factor is None:
                return None
            try:
                return float(value) * factor
            except ValueError:
                return None
    return None
