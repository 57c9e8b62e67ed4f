"""The ``OUT.zarr`` layout: one OME-NGFF 0.5 image group per slide (zarr v3).

::

    OUT.zarr/
      <slide key>/                 image group (multiscales): the slide at the model scale
        0                          uint8 (c=3, y, x) RGB
        labels/classes/0           uint8 (y, x) semantic map, see SEMANTIC_CLASSES
        probabilities/0            uint8 (c=C, y, x) blended probabilities, round(p * 255)

All arrays are at the model's scale; their ``coordinateTransformations``
give it in micrometres, so napari overlays them on each other and on any
other image of the slide. ``attrs["smearscan"]`` of the slide group records
the source file, its size and pixel size (and how that was obtained), the
model and the factor between source and model pixels. The NGFF metadata is
written with the ``ome-zarr`` package.

Crash safety: a slide's group is built in a staging directory beside
``OUT.zarr`` (:func:`staging_dir`, e.g. ``.report.zarr.partial/`` for
``report.zarr``), outside the store so zarr never lists it as a member,
on the same filesystem so a rename is atomic. Only a slide that fully
succeeded is moved to ``OUT.zarr/<key>`` (:func:`publish_slide_store`), so a
process killed mid-slide (SIGKILL included) leaves at most a staged group,
never a partial one under its final name. Staging leftovers of a killed run
are removed when the next batch starts (:func:`clear_staging`); the empty
staging directory itself stays beside ``OUT.zarr`` after a run.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr
from ome_zarr.format import FormatV05
from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

from smearscan.errors import OutputPathError
from smearscan.models.base import SEMANTIC_CLASSES
from smearscan.slide_keys import (  # noqa: F401  (re-exported)
    check_key,
    slide_group_path,
    slide_key,
    unique_keys,
)

log = logging.getLogger(__name__)

#: Chunk side (pixels) of every array of a slide group; also the streaming merger's block.
CHUNK_PX = 256

#: Display colours (RGBA) of the semantic classes in ``labels/classes``.
CLASS_COLORS: dict[str, tuple[int, int, int, int]] = {
    "background": (0, 0, 0, 0),
    "rbc": (230, 90, 90, 255),
    "wbc_cytoplasm": (90, 160, 255, 255),
    "wbc_nucleus": (120, 30, 170, 255),
    "platelet": (255, 190, 0, 255),
}

_SPACE_AXES = [
    {"name": "y", "type": "space", "unit": "micrometer"},
    {"name": "x", "type": "space", "unit": "micrometer"},
]
_CHANNEL_AXIS = {"name": "c", "type": "channel"}


def discard_slide_store(zarr_path: Path, key: str) -> None:
    """Remove a slide's group (after a failure), so no partial masks remain.

    Never removes anything outside ``zarr_path``: an unsafe key removes nothing.
    """
    try:
        target = slide_group_path(zarr_path, key)
    except OutputPathError:
        return
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)


def staging_dir(zarr_path: Path) -> Path:
    """Where the slides' groups of ``zarr_path`` are built before they are published.

    A hidden sibling of the (resolved) store, ``<parent>/.<name>.partial``:
    outside the store, so zarr never lists a half-built group as a member, and
    on its filesystem, so :func:`os.rename` into the store is atomic. A pure
    function of the path (and the shared filesystem), so every worker of a
    distributed run, on any machine, finds the same one.
    """
    root = Path(zarr_path).resolve()
    return root.parent / f".{root.name}.partial"


def _real_staging_dir(zarr_path: Path) -> Path:
    """:func:`staging_dir`, created when missing; a link there is refused."""
    staging = staging_dir(zarr_path)
    if staging.is_symlink():
        raise OutputPathError(f"{staging} is a link; refusing to stage slide groups there")
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _remove_tree(path: Path) -> None:
    """Remove a directory tree, or the link or file itself; nothing when absent."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def clear_staging(zarr_path: Path) -> None:
    """Remove the staging directory of ``zarr_path`` with whatever a killed run left there.

    Call it only while no slide of this store is being processed (the batch
    holds the output's lock and has not started any slide yet).
    """
    staging = staging_dir(zarr_path)
    if staging.is_symlink() or staging.exists():
        log.info("removing staging leftovers %s", staging)
        _remove_tree(staging)


@dataclass
class SlideStore:
    """Open arrays of one slide's group.

    The group is built at ``staged_path`` and moved to ``path`` by
    :func:`publish_slide_store` once the slide has fully succeeded.

    Attributes:
        path: Final filesystem path of the slide group (``OUT.zarr/<key>``).
        group: The zarr group (at ``staged_path`` until published).
        image: uint8 ``(3, H, W)`` RGB at the model scale, or None.
        classes: uint8 ``(H, W)`` semantic map.
        probabilities: uint8 ``(C, H, W)``, or None.
        staged_path: Where the group is built, inside :func:`staging_dir`.
    """

    path: Path
    group: zarr.Group
    image: zarr.Array | None
    classes: zarr.Array
    probabilities: zarr.Array | None
    staged_path: Path | None = None


def publish_slide_store(store: SlideStore) -> Path:
    """Move a fully written slide group from its staging place to ``OUT.zarr/<key>``.

    A previous group of the key is first renamed aside into the staging
    directory, then the new one is renamed in, then the old one is deleted.
    Between the two renames there is no group of the key at all (never a
    partial one); a kill there leaves the slide without masks, and the ledger
    without a ``done`` record for it, so the re-run redoes it.

    Returns:
        The final path (``store.path``).

    Raises:
        OutputPathError: The final path leads outside the store.
        OSError: A rename failed (e.g. the staging directory is on another filesystem).
    """
    staged, target = store.staged_path, store.path
    if staged is None:  # built in place (never by create_slide_store)
        return target
    slide_group_path(target.parent, target.name)  # still inside the store
    old = None
    if target.is_symlink() or target.exists():
        old = staged.with_name(staged.name + ".old")
        os.rename(target, old)
    os.rename(staged, target)
    store.staged_path = None
    if old is not None:
        try:
            _remove_tree(old)
        except OSError as exc:  # the new group is in place; the next batch clears the rest
            log.warning("previous group %s not removed: %s", old, exc)
    log.debug("published %s", target)
    return target


def discard_staged_store(store: SlideStore) -> None:
    """Remove the staged group of a slide that did not succeed (nothing once published).

    Never raises: what cannot be removed now is logged, and removed by
    :func:`clear_staging` when the next batch starts.
    """
    if store.staged_path is None:
        return
    try:
        _remove_tree(store.staged_path)
    except OSError as exc:
        log.warning("staged group %s not removed: %s", store.staged_path, exc)
    store.staged_path = None


def _scale(pixel_size_um: float, channels: bool) -> list[dict[str, Any]]:
    scale = [pixel_size_um, pixel_size_um]
    return [{"type": "scale", "scale": ([1.0] if channels else []) + scale}]


def _multiscale(group: zarr.Group, name: str, pixel_size_um: float, channels: bool) -> None:
    write_multiscales_metadata(
        group,
        datasets=[{"path": "0", "coordinateTransformations": _scale(pixel_size_um, channels)}],
        fmt=FormatV05(),
        axes=([_CHANNEL_AXIS] if channels else []) + _SPACE_AXES,
        name=name,
    )


def _classes_label(
    group: zarr.Group,
    classes: tuple[str, ...],
    shape: tuple[int, int],
    chunks: tuple[int, int],
    pixel_size_um: float,
) -> zarr.Array:
    """``labels/classes``: the uint8 semantic map with NGFF label colours and names."""
    labels = group.create_group("labels")
    label_group = labels.create_group("classes")
    array = label_group.create_array("0", shape=shape, chunks=chunks, dtype="uint8", fill_value=0)
    _multiscale(label_group, "classes", pixel_size_um, channels=False)
    write_label_metadata(
        labels,
        "classes",
        fmt=FormatV05(),
        colors=[
            {"label-value": i, "rgba": list(CLASS_COLORS.get(c, (128, 128, 128, 255)))}
            for i, c in enumerate(classes)
        ],
        properties=[{"label-value": i, "class": c} for i, c in enumerate(classes)],
    )
    return array


def _probabilities(
    group: zarr.Group,
    classes: tuple[str, ...],
    shape: tuple[int, int],
    chunks: tuple[int, int],
    pixel_size_um: float,
) -> zarr.Array:
    """``probabilities``: uint8 ``round(p * 255)`` per class, channels first."""
    prob_group = group.create_group("probabilities")
    array = prob_group.create_array(
        "0",
        shape=(len(classes), *shape),
        chunks=(len(classes), *chunks),
        dtype="uint8",
        fill_value=0,
    )
    _multiscale(prob_group, "probabilities", pixel_size_um, channels=True)
    prob_group.attrs["smearscan"] = {"classes": list(classes), "value_scale": 1 / 255}
    return array


def create_instance_labels(store: SlideStore, name: str, pixel_size_um: float) -> zarr.Array:
    """Add an int32 instance label image ``labels/<name>`` beside ``labels/classes``.

    Args:
        store: The slide's open store.
        name: ``cells`` or ``nuclei``.
        pixel_size_um: Pixel size of the masks (the model scale).

    Returns:
        The int32 ``(H, W)`` array, chunked like ``labels/classes``.
    """
    labels = store.group.require_group("labels")
    group = labels.create_group(name)
    array = group.create_array(
        "0", shape=store.classes.shape, chunks=store.classes.chunks, dtype="int32", fill_value=0
    )
    _multiscale(group, name, pixel_size_um, channels=False)
    write_label_metadata(labels, name, fmt=FormatV05())
    return array


def create_slide_store(
    zarr_path: Path,
    key: str,
    *,
    height: int,
    width: int,
    pixel_size_um: float,
    classes: tuple[str, ...] = SEMANTIC_CLASSES,
    chunk_px: int = CHUNK_PX,
    write_image: bool = True,
    write_probabilities: bool = True,
    attrs: dict[str, Any] | None = None,
) -> SlideStore:
    """Create the group of one slide and its arrays in the staging directory.

    Nothing under ``zarr_path`` changes until :func:`publish_slide_store`
    replaces any previous group of the key; call :func:`discard_staged_store`
    if the slide fails.

    Args:
        zarr_path: The ``OUT.zarr`` directory (created when missing).
        key: Group name from :func:`slide_key`.
        height: Rows at the model scale.
        width: Columns at the model scale.
        pixel_size_um: Model-scale pixel size, written as the NGFF scale.
        classes: Names of the semantic classes (label values 0..C-1).
        chunk_px: Chunk side of every array in pixels.
        write_image: Create the RGB image array.
        write_probabilities: Create the probability array.
        attrs: JSON-serialisable provenance stored as ``attrs["smearscan"]``.
    """
    target = slide_group_path(zarr_path, key)
    zarr.open_group(zarr_path, mode="a", zarr_format=3)  # the store root, for the publish
    staged = _real_staging_dir(zarr_path) / f"{key}-{os.getpid()}-{secrets.token_hex(6)}"
    group = zarr.open_group(staged, mode="w-", zarr_format=3)
    chunks = (min(chunk_px, height), min(chunk_px, width))
    image = None
    if write_image:
        image = group.create_array(
            "0", shape=(3, height, width), chunks=(3, *chunks), dtype="uint8", fill_value=0
        )
    # the image group needs multiscales metadata even without pixels, for the labels
    _multiscale(group, key, pixel_size_um, channels=True)

    class_array = _classes_label(group, classes, (height, width), chunks, pixel_size_um)
    probabilities = None
    if write_probabilities:
        probabilities = _probabilities(group, classes, (height, width), chunks, pixel_size_um)
    group.attrs["smearscan"] = dict(attrs or {}, classes=list(classes))
    return SlideStore(
        path=target,
        group=group,
        image=image,
        classes=class_array,
        probabilities=probabilities,
        staged_path=staged,
    )
