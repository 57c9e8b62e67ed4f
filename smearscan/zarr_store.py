"""The ``OUT.zarr`` store: one OME-NGFF 0.5 image group per slide (zarr v3).

::

    OUT.zarr/                      root: ome = {version, bioformats2raw.layout: 3, series}
      <slide key>/                 image group (multiscales): the slide at the model scale
        s0, s1, ...                uint8 (c=3, y, x) RGB pyramid, omero R/G/B channels
        labels/classes/s0, ...     uint8 (y, x) semantic map, see SEMANTIC_CLASSES
        labels/cells/s0, ...       int32 (y, x) instance ids = cell_id
        labels/nuclei/s0, ...      int32 (y, x) the owning cell's id
        probabilities/s0, ...      uint8 (c=C, y, x) blended probabilities, round(p * 255)

``s0`` of every array is at the model's scale, each further level half the
previous one; their ``coordinateTransformations`` give it in micrometres, so
napari overlays them on each other and on any other image of the slide.
:mod:`smearscan.ngff` writes all of it with the ``ome-zarr`` writer and says
how ``probabilities`` and the slides are reached from the metadata; read a
full-resolution array with :func:`smearscan.ngff.full_resolution`.
``attrs["smearscan"]`` of the slide group records the source file, its size
and pixel size (and how that was obtained), the model and the factor between
source and model pixels.

Crash safety: a slide's group is built in a staging directory beside
``OUT.zarr`` (:func:`staging_dir`, e.g. ``.report.zarr.partial/`` for
``report.zarr``), outside the store so zarr never lists it as a member,
on the same filesystem so a rename is atomic. The arrays are filled there at
full resolution (in the group's scratch ``.level0/``); the pyramids and the
NGFF metadata are written when the slide has fully succeeded, and only then
is the group moved to ``OUT.zarr/<key>`` (:func:`publish_slide_store`), so a
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zarr

from smearscan.errors import OutputPathError
from smearscan.leftovers import zarr_staging_dir
from smearscan.models.base import SEMANTIC_CLASSES
from smearscan.ngff import SCRATCH, full_resolution, update_series, write_slide_ngff
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
        update_series(zarr_path)


def staging_dir(zarr_path: Path) -> Path:
    """Where the slides' groups of ``zarr_path`` are built before they are published.

    A hidden sibling of the (resolved) store, ``<parent>/.<name>.partial``:
    outside the store, so zarr never lists a half-built group as a member, and
    on its filesystem, so :func:`os.rename` into the store is atomic. A pure
    function of the path (and the shared filesystem), so every worker of a
    distributed run, on any machine, finds the same one.
    """
    return zarr_staging_dir(zarr_path)  # defined without zarr, for the runs' cleanup


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
        instances: int32 ``(H, W)`` instance labels by name (``cells``, ``nuclei``).
        pixel_size_um: Pixel size of every array (µm, the model scale).
        class_names: Names of the semantic classes (label values 0..C-1).
        chunk_px: Chunk side of every array (pixels).

    Until published the arrays are the full-resolution scratch arrays being
    filled; once published, the ``s0`` arrays of the NGFF image at ``path``.
    """

    path: Path
    group: zarr.Group
    image: zarr.Array | None
    classes: zarr.Array
    probabilities: zarr.Array | None
    staged_path: Path | None = None
    instances: dict[str, zarr.Array] = field(default_factory=dict)
    pixel_size_um: float = 1.0
    class_names: tuple[str, ...] = SEMANTIC_CLASSES
    chunk_px: int = CHUNK_PX


def publish_slide_store(store: SlideStore) -> Path:
    """Move a fully written slide group from its staging place to ``OUT.zarr/<key>``.

    First the NGFF image is written from the staged scratch arrays (pyramids
    and metadata, :func:`smearscan.ngff.write_slide_ngff`) and the scratch
    removed. A previous group of the key is then renamed aside into the
    staging directory, the new one is renamed in, the old one is deleted, and
    the root's ``series`` is updated (:func:`smearscan.ngff.update_series`).
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
    _write_ngff(store, staged)
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
    update_series(target.parent)
    _reopen(store)
    log.debug("published %s", target)
    return target


def _write_ngff(store: SlideStore, staged: Path) -> None:
    """Write the staged group's NGFF image from its scratch arrays, then drop the scratch."""
    if not (staged / SCRATCH).is_dir():  # already written
        return
    write_slide_ngff(
        store.group,
        name=store.path.name,
        pixel_size_um=store.pixel_size_um,
        class_names=store.class_names,
        class_colors=CLASS_COLORS,
        chunk_px=store.chunk_px,
    )
    shutil.rmtree(staged / SCRATCH)


def _reopen(store: SlideStore) -> None:
    """Point the store's arrays at the ``s0`` arrays of its published group."""
    group = zarr.open_group(store.path, mode="r+", zarr_format=3)
    store.group = group
    store.classes = full_resolution(group, "labels/classes")
    image = group.get("s0")
    store.image = image if isinstance(image, zarr.Array) else None
    store.probabilities = (
        full_resolution(group, "probabilities") if "probabilities" in group else None
    )
    store.instances = {name: full_resolution(group, f"labels/{name}") for name in store.instances}


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


def _scratch_array(
    store_group: zarr.Group, name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str
) -> zarr.Array:
    """A full-resolution array of the slide in its :data:`SCRATCH` group, filled with 0."""
    scratch = store_group.require_group(SCRATCH)
    return scratch.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)


def create_instance_labels(store: SlideStore, name: str, pixel_size_um: float) -> zarr.Array:
    """Add an int32 instance label image ``labels/<name>`` beside ``labels/classes``.

    The array is filled at full resolution; its NGFF label image (pyramid,
    ``image-label`` metadata) is written when the slide is published.

    Args:
        store: The slide's open store.
        name: ``cells`` or ``nuclei``.
        pixel_size_um: Pixel size of the masks (the model scale); the store's is used.

    Returns:
        The int32 ``(H, W)`` array, chunked like ``labels/classes``.
    """
    del pixel_size_um  # the store's: every array of a slide shares one grid
    array = _scratch_array(store.group, name, store.classes.shape, store.classes.chunks, "int32")
    store.instances[name] = array
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

    The arrays are full-resolution scratch arrays; :func:`publish_slide_store`
    writes the NGFF image from them (:func:`smearscan.ngff.write_slide_ngff`)
    and replaces any previous group of the key. Nothing under ``zarr_path``
    changes until then; call :func:`discard_staged_store` if the slide fails.

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
    if not (Path(zarr_path) / "zarr.json").is_file():  # the store root, for the publish
        update_series(zarr_path)  # under its lock: concurrent slides may be first
    staged = _real_staging_dir(zarr_path) / f"{key}-{os.getpid()}-{secrets.token_hex(6)}"
    group = zarr.open_group(staged, mode="w-", zarr_format=3)
    chunks = (min(chunk_px, height), min(chunk_px, width))
    image = None
    if write_image:
        image = _scratch_array(group, "image", (3, height, width), (3, *chunks), "uint8")
    class_array = _scratch_array(group, "classes", (height, width), chunks, "uint8")
    probabilities = None
    if write_probabilities:
        n = len(classes)
        probabilities = _scratch_array(
            group, "probabilities", (n, height, width), (n, *chunks), "uint8"
        )
    group.attrs["smearscan"] = dict(attrs or {}, classes=list(classes))
    return SlideStore(
        path=target,
        group=group,
        image=image,
        classes=class_array,
        probabilities=probabilities,
        staged_path=staged,
        pixel_size_um=pixel_size_um,
        class_names=tuple(classes),
        chunk_px=chunk_px,
    )
