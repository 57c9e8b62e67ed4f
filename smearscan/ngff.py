"""OME-NGFF 0.5 (zarr v3) of the ``OUT.zarr`` store, written with ``ome-zarr``.

A slide's arrays are filled block by block, at full resolution, in a scratch
group (:data:`SCRATCH`) inside its staged group. :func:`write_slide_ngff`
then writes the slide's NGFF image from them with the ``ome-zarr`` writer
(``write_image`` / ``write_labels``, ``FormatV05``): every array as a pyramid
``s0`` (full resolution), ``s1`` (half), ... down to one chunk, with
``dimension_names``, scale and translation transforms in micrometres, and
removes the scratch group. A published slide group::

    <key>/                     image: multiscales[0] = the RGB, omero = R, G, B channels
      s0, s1, ...              uint8 (c=3, y, x)
      labels/                  ome: version, labels = [classes, cells, nuclei]
        classes/s0, ...        uint8 (y, x), image-label colours + class names
        cells/s0, ...          int32 (y, x), label value = cell_id
        nuclei/s0, ...         int32 (y, x), the owning cell's id
      probabilities/s0, ...    uint8 (c=C, y, x), round(p * 255): an NGFF image of its
                               own (omero channels named by class), and listed as the
                               second entry, named "probabilities", of the slide's
                               multiscales (paths probabilities/s0, ...)

Every label image names its source image (``image-label.source.image =
"../../"``). Without the RGB (``output.write_image = false``) the slide's
multiscales[0] points at ``labels/classes/s0, ...`` so the group stays a
valid image for its labels.

The store root is a zarr v3 group with the bioformats2raw-layout metadata
``ome = {"version": "0.5", "bioformats2raw.layout": 3, "series": [keys]}``
listing every published slide group (:func:`update_series`); a reader opens
``OUT.zarr/<series entry>`` with ``ome_zarr.reader``.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import dask
import dask.array as da
import zarr
from ome_zarr.format import FormatV05
from ome_zarr.scale import Methods
from ome_zarr.writer import add_metadata, get_metadata, write_image, write_labels

from smearscan.errors import OutputPathError
from smearscan.slide_keys import check_key

log = logging.getLogger(__name__)

#: Scratch group inside a staged slide group: the full-resolution arrays being filled.
SCRATCH = ".level0"
#: Name of the probabilities' entry in the slide image's ``multiscales``.
PROBABILITIES = "probabilities"
#: Threads of the (local) dask scheduler that writes a slide's pyramid.
_WRITE_THREADS = max(1, min(4, os.cpu_count() or 1))
_UNITS = {"y": "micrometer", "x": "micrometer"}
_RGB = (("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF"))


def pyramid_factors(height: int, width: int, chunk_px: int) -> tuple[int, ...]:
    """Downsampling factors of the pyramid below full resolution: ``(2, 4, ...)``.

    Levels are added until the longer side fits one chunk (at least one level,
    so every image is a pyramid), and never below one pixel on the shorter side.

    Args:
        height: Rows at full resolution (pixels).
        width: Columns at full resolution (pixels).
        chunk_px: Chunk side (pixels).
    """
    factors: list[int] = []
    factor = 2
    while min(height, width) >= factor and (
        not factors or -(-max(height, width) // (factor // 2)) > chunk_px
    ):
        factors.append(factor)
        factor *= 2
    return tuple(factors)


def _channels(names: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """An ``omero`` block: one active channel per ``(label, hex colour)``, window 0..255."""
    window = {"min": 0, "max": 255, "start": 0, "end": 255}
    return {
        "channels": [
            {"label": label, "color": color, "window": dict(window), "active": True}
            for label, color in names
        ],
        "rdefs": {"model": "color"},
    }


def _hex(rgba: tuple[int, int, int, int]) -> str:
    return "".join(f"{v:02X}" for v in rgba[:3])


def _write_image(
    group: zarr.Group,
    data: zarr.Array,
    name: str,
    pixel_size_um: float,
    factors: tuple[int, ...],
    omero: dict[str, Any],
) -> None:
    """``write_image`` of a uint8 ``(c, y, x)`` array into ``group`` (levels ``s0``...)."""
    write_image(
        da.from_zarr(data),
        group,
        scale_factors=factors,
        method=Methods.RESIZE,
        fmt=FormatV05(),
        axes=["c", "y", "x"],
        scale={"c": 1.0, "y": pixel_size_um, "x": pixel_size_um},
        axes_units=_UNITS,
        name=name,
        storage_options={"chunks": data.chunks},
        omero=omero,
    )


def _write_label(
    group: zarr.Group,
    data: zarr.Array,
    name: str,
    pixel_size_um: float,
    factors: tuple[int, ...],
    label_metadata: dict[str, Any],
) -> None:
    """``write_labels`` of an integer ``(y, x)`` array as ``labels/<name>`` (nearest levels)."""
    write_labels(
        da.from_zarr(data),
        group,
        name=name,
        scaler=None,
        scale_factors=factors,
        method=Methods.NEAREST,
        fmt=FormatV05(),
        axes=["y", "x"],
        scale={"y": pixel_size_um, "x": pixel_size_um},
        axes_units=_UNITS,
        storage_options={"chunks": data.chunks},
        label_metadata={"source": {"image": "../../"}, **label_metadata},
    )


def write_slide_ngff(
    group: zarr.Group,
    *,
    name: str,
    pixel_size_um: float,
    class_names: tuple[str, ...],
    class_colors: dict[str, tuple[int, int, int, int]],
    chunk_px: int,
) -> None:
    """Write the NGFF image of a staged slide group from its :data:`SCRATCH` arrays.

    The scratch group holds ``classes`` (uint8 ``(H, W)``), optionally
    ``image`` (uint8 ``(3, H, W)``), ``probabilities`` (uint8 ``(C, H, W)``),
    ``cells`` and ``nuclei`` (int32 ``(H, W)``); the caller removes it afterwards.

    Args:
        group: The staged slide group (zarr v3).
        name: Name of the image (the slide key).
        pixel_size_um: Full-resolution pixel size (µm), the NGFF scale of ``s0``.
        class_names: Names of the semantic classes (label values 0..C-1).
        class_colors: RGBA display colour per class name (grey when missing).
        chunk_px: Chunk side (pixels); the pyramid ends at one chunk.
    """
    scratch = cast(zarr.Group, group[SCRATCH])
    classes = cast(zarr.Array, scratch["classes"])
    height, width = classes.shape
    factors = pyramid_factors(height, width, chunk_px)
    colors = [class_colors.get(c, (128, 128, 128, 255)) for c in class_names]
    with dask.config.set(scheduler="threads", num_workers=_WRITE_THREADS):
        if "image" in scratch:
            image = cast(zarr.Array, scratch["image"])
            _write_image(group, image, name, pixel_size_um, factors, _channels(_RGB))
        class_labels = {
            "colors": [{"label-value": i, "rgba": list(c)} for i, c in enumerate(colors)],
            "properties": [{"label-value": i, "class": c} for i, c in enumerate(class_names)],
        }
        _write_label(group, classes, "classes", pixel_size_um, factors, class_labels)
        for label in ("cells", "nuclei"):
            if label in scratch:
                _write_label(
                    group, cast(zarr.Array, scratch[label]), label, pixel_size_um, factors, {}
                )
        if "probabilities" in scratch:
            probs = group.create_group(PROBABILITIES)
            omero = _channels(
                [(c, _hex(rgba)) for c, rgba in zip(class_names, colors, strict=True)]
            )
            data = cast(zarr.Array, scratch["probabilities"])
            _write_image(probs, data, PROBABILITIES, pixel_size_um, factors, omero)
            probs.attrs["smearscan"] = {"classes": list(class_names), "value_scale": 1 / 255}
    add_metadata(group["labels"], {"version": FormatV05().version}, fmt=FormatV05())
    _link_multiscales(group, name)


def _link_multiscales(group: zarr.Group, name: str) -> None:
    """Complete the slide image's ``multiscales``: the RGB (or the classes map), then
    the probabilities as a second entry, their dataset paths relative to the slide."""

    def entry(path: str, entry_name: str) -> dict[str, Any]:
        multiscale = dict(get_metadata(group[path])["multiscales"][0])
        multiscale["datasets"] = [
            dict(d, path=f"{path}/{d['path']}") for d in multiscale["datasets"]
        ]
        multiscale["name"] = entry_name
        return multiscale

    ome = get_metadata(group)
    multiscales = list(ome.get("multiscales", [])) or [entry("labels/classes", name)]
    if PROBABILITIES in group:
        multiscales.append(entry(PROBABILITIES, PROBABILITIES))
    add_metadata(group, {"version": FormatV05().version, "multiscales": multiscales},
                 fmt=FormatV05())  # fmt: skip


def full_resolution(group: zarr.Group, path: str = "") -> zarr.Array:
    """The full-resolution array of the NGFF image at ``path`` in ``group``.

    Follows the image's ``multiscales[0].datasets[0].path`` (``s0`` in this
    layout, ``0`` in stores written by smearscan before it), e.g.
    ``full_resolution(slide, "labels/cells")``.

    Raises:
        KeyError: No NGFF image, or no such array, at ``path``.
    """
    image = group[path] if path else group
    if not isinstance(image, zarr.Group):
        raise KeyError(f"{path!r} is not a group")
    multiscales = get_metadata(image).get("multiscales") or []
    if not multiscales:
        raise KeyError(f"{path or '/'} has no NGFF multiscales metadata")
    array = image[multiscales[0]["datasets"][0]["path"]]
    if not isinstance(array, zarr.Array):
        raise KeyError(f"{path or '/'}: its first dataset is not an array")
    return array


def series_lock_path(zarr_path: Path) -> Path:
    """The lock serialising updates of the root's ``series``: ``<parent>/.<name>.lock``
    beside the (resolved) store, outside it so zarr never lists it."""
    root = Path(zarr_path).resolve()
    return root.parent / f".{root.name}.lock"


@contextmanager
def _series_lock(zarr_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on :func:`series_lock_path` (threads and processes)."""
    lock = series_lock_path(zarr_path)
    if lock.is_symlink():
        raise OutputPathError(f"{lock} is a link; refusing to lock through it")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _slide_groups(root: Path) -> list[str]:
    """Names of the slide groups under ``root``: safe keys that are zarr groups."""
    keys = []
    for entry in os.scandir(root):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            check_key(entry.name)
        except OutputPathError:
            continue
        if os.path.isfile(os.path.join(entry.path, "zarr.json")):
            keys.append(entry.name)
    return sorted(keys)


def update_series(zarr_path: Path) -> list[str]:
    """Create the store root when missing and list its slide groups in its metadata.

    Writes ``ome = {"version": "0.5", "bioformats2raw.layout": 3, "series":
    [keys]}`` from the groups present now. Safe with concurrent publishers
    (threads, processes, machines on one filesystem): the listing and the
    write happen under one lock, so the last update sees every group renamed
    in before it; zarr replaces ``zarr.json`` atomically.

    Returns:
        The slide keys listed, sorted.
    """
    with _series_lock(zarr_path):
        root = zarr.open_group(zarr_path, mode="a", zarr_format=3)
        keys = _slide_groups(Path(zarr_path))
        metadata = {"version": FormatV05().version, "bioformats2raw.layout": 3, "series": keys}
        if get_metadata(root) != metadata:
            root.attrs["ome"] = metadata
    log.debug("%s lists %d slide groups", zarr_path, len(keys))
    return keys
