"""Library API: process one slide (:func:`process_slide`) or a batch (:func:`process_batch`).

One slide goes: open lazily -> pixel size (given, file metadata, or the
median RBC diameter) -> the model's scale -> per-slide calibration -> tiled
batched inference -> blended probabilities -> ``labels/classes`` and
probabilities in the slide's OME-Zarr group. Small slides are blended in
memory; larger ones stream block by block into Zarr so memory stays bounded.
Every failure is raised as :class:`~smearscan.errors.ProcessingError` naming
the stage, so a batch can record it and go on with the other slides.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smearscan import __version__
from smearscan.batch import SlideTask, TileProgress, process_batch  # noqa: F401  (re-exported)
from smearscan.blank_field import field_content, fill_no_smear
from smearscan.cells import run_cell_stage
from smearscan.classify import CellClassifier, load_classifier
from smearscan.config import ProcessConfig
from smearscan.errors import ProcessingError, SmearscanError
from smearscan.flags import NO_SMEAR, apply_field_flags, mark_no_smear
from smearscan.grouping import UNGROUPED_NOTE
from smearscan.image_header import check_header
from smearscan.inference import TilePredictor, choose_device
from smearscan.limits import (
    SlideMemoryError,
    SlideTimeoutError,
    check_deadline,
    check_decode_memory,
    check_memory,
    deadline,
    memory_estimate,
)
from smearscan.models.base import ModelSpec, calibrate_if_supported
from smearscan.plausibility import check_scale, evidence_from_result
from smearscan.quality import slide_quality
from smearscan.registry import load_model
from smearscan.resample import Reader, resample_window, scale_factor, scaled_shape
from smearscan.results import OutputPaths, SlideResult
from smearscan.review import previews_or_note
from smearscan.scale_plan import (
    GIVEN_METHOD,
    ScaleDecision,
    central_window,
    resolve_pixel_size,
)
from smearscan.segmentation import ScaledSlide, band_rows_for, plan_grid, run_tiles
from smearscan.slide_io import Slide, open_slide, read_region
from smearscan.stitching import (
    InMemoryMerger,
    Merger,
    ZarrMerger,
    argmax_classes,
    quantize_probabilities,
)
from smearscan.tiling import Tile, TileGrid
from smearscan.zarr_store import (
    CHUNK_PX,
    SlideStore,
    check_key,
    clear_staging,
    create_slide_store,
    discard_slide_store,
    discard_staged_store,
    publish_slide_store,
    slide_key,
    update_series,
)

log = logging.getLogger(__name__)

#: Side (model pixels) of the central window each slide's calibration sees.
CALIBRATION_PX = 2048


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Re-raise any failure inside the block as a :class:`ProcessingError` of stage ``name``.

    A slide past its ``--slide-timeout`` fails on entering the block (stage
    ``timeout``), as it does at the checks inside the block.
    """
    try:
        check_deadline(name)
        yield
    except ProcessingError:
        raise
    except SlideTimeoutError as exc:
        raise ProcessingError("timeout", str(exc)) from exc
    except SlideMemoryError as exc:
        raise ProcessingError("memory", str(exc)) from exc
    except SmearscanError as exc:
        raise ProcessingError(name, str(exc)) from exc
    except MemoryError as exc:
        raise ProcessingError(name, "out of memory") from exc
    except Exception as exc:  # failure isolation: any bug or library error fails one slide
        log.debug("stage %s failed", name, exc_info=True)
        raise ProcessingError(name, f"{type(exc).__name__}: {exc}") from exc


def real_path(path: Path) -> str:
    """Absolute path with links resolved; never raises (a link loop stays as it is)."""
    return os.path.realpath(Path(path).absolute())


def slide_reader(slide: Slide) -> Reader:
    """A reader of the slide's pixels that decodes only the stored tiles under a window."""
    return lambda w: read_region(slide, w.y0, w.y1, w.x0, w.x1, pad_mode="symmetric")


def _apply_scale(result: SlideResult, decision: ScaleDecision | None) -> float | None:
    """Record a slide's pixel-size decision in its result; the source µm/px (None: none)."""
    if decision is None:  # a field without a smear: masks at the model's scale
        result.pixel_size_um = None
        result.pixel_size_method = (
            "unknown (NO_SMEAR: no cells to measure; masks at the model's scale)"
        )
        return None
    result.pixel_size_um, result.pixel_size_method = decision.pixel_size_um, decision.method
    result.camera = decision.camera
    result.notes.extend(decision.notes)
    result.flags.extend(f for f in decision.flags if f not in result.flags)
    return decision.pixel_size_um


def _store_attrs(result: SlideResult, spec: ModelSpec, s: float) -> dict[str, Any]:
    return {
        "version": __version__,
        "source": result.slide,
        "source_shape": [result.height, result.width],
        "source_pixel_size_um": result.pixel_size_um,
        "pixel_size_method": result.pixel_size_method,
        "camera": result.camera,
        "model": spec.name,
        "model_pixel_size_um": spec.input_pixel_size_um,
        "model_pixels_per_source_pixel": s,
    }


def _image_writer(
    store: SlideStore, grid: TileGrid
) -> Callable[[Sequence[Tile], np.ndarray], None]:
    """Hook writing each tile's owned block of the resampled RGB into the store."""

    def write(tiles: Sequence[Tile], pixels: np.ndarray) -> None:
        if store.image is None:
            return
        for tile, rgb in zip(tiles, pixels, strict=True):
            core = grid.core_window(tile)
            if core is None:
                continue
            block = rgb[
                core.y0 - tile.y0 : core.y1 - tile.y0, core.x0 - tile.x0 : core.x1 - tile.x0
            ]
            store.image[:, core.y0 : core.y1, core.x0 : core.x1] = block.transpose(2, 0, 1)

    return write


def _predictor(config: ProcessConfig) -> tuple[torch.nn.Module, ModelSpec, TilePredictor]:
    with stage("model"):
        model = load_model(config.model)
        spec: ModelSpec = model.spec  # type: ignore[assignment]
        predictor = TilePredictor(
            model,
            choose_device(config.inference.device),
            batch_size=config.inference.batch_size,
            amp=config.inference.amp,
        )
    return model, spec, predictor


def _classifier(config: ProcessConfig) -> CellClassifier | None:
    """The cell classifier of the run (None: the morphometric rules)."""
    with stage("model"):
        return load_classifier(config.classify.classifier, choose_device(config.inference.device))


def _merger(grid: TileGrid, spec: ModelSpec, store: SlideStore, in_memory: bool) -> Merger:
    if in_memory:
        return InMemoryMerger(grid, spec.n_classes)
    return ZarrMerger(
        grid,
        spec.n_classes,
        store.classes,
        store.probabilities,
        block_px=store.classes.chunks[0],
    )


def _finish(merger: Merger, store: SlideStore, result: SlideResult, spec: ModelSpec) -> None:
    """Write what an in-memory merger holds; record class fractions and the mask path."""
    with stage("write"):
        if isinstance(merger, InMemoryMerger):
            probs = merger.finalize()
            store.classes[:] = argmax_classes(probs)
            if store.probabilities is not None:
                store.probabilities[:] = quantize_probabilities(probs)
            result.stitching = "memory"
        else:
            merger.finalize()
            result.stitching = "zarr-stream"
    pixels = max(1, int(merger.class_pixels.sum()))
    result.class_fractions = {
        c: round(float(n) / pixels, 6)
        for c, n in zip(spec.classes, merger.class_pixels, strict=True)
    }
    result.mask_path = str(store.path)


def _check_memory(slide: Slide, grid: TileGrid, spec: ModelSpec, config: ProcessConfig) -> bool:
    """Whether to blend in memory; fail the slide (stage ``memory``) over ``--max-memory``.

    In memory when the probabilities fit ``tiling.in_memory_limit_mb`` and the
    slide then fits ``--max-memory``; else streamed band by band into Zarr.
    """
    with stage("memory"):
        height, width = grid.rows.length, grid.cols.length
        chunk = math.prod(max(sizes) for sizes in slide.array.chunks)  # bytes: uint8
        parts: dict[str, Any] = {
            # a JPEG/PNG/BMP is held whole; a TIFF's chunks are read window by window
            "source_bytes": int(slide.array.nbytes)
            if slide.format != "tiff"
            else min(int(slide.array.nbytes), 4 * chunk),
            "mask_shape": (height, width),
            "n_classes": spec.n_classes,
            # streaming holds one block row across the slide and a band's open blocks
            "stream_px": CHUNK_PX * width
            + (band_rows_for(grid) * grid.rows.stride + grid.rows.tile) * 3 * grid.cols.tile,
            "tile_px": max(grid.rows.tile, grid.cols.tile),
            "batch_size": min(config.inference.batch_size, len(grid)),
            "network": spec.architecture != "classical",
        }
        limit = config.batch.max_memory_mb
        whole = memory_estimate(in_memory=True, **parts)
        fits = (spec.n_classes + 1) * height * width * 4 <= config.tiling.in_memory_limit_mb << 20
        if fits and (limit is None or whole.total_mib <= limit):
            return True
        check_memory(memory_estimate(in_memory=False, **parts), limit)
        return False


def _segment(
    slide: Slide,
    result: SlideResult,
    pixel_size_um: float | None,
    config: ProcessConfig,
    zarr_path: Path,
    key: str,
    progress: TileProgress | None,
    previews_dir: Path | None,
) -> None:
    """Resample, calibrate, run the tiles, write the masks, find the cells, draw the previews.

    The group is built in the staging directory and published to
    ``OUT.zarr/<key>`` only once all of that succeeded; on any failure it is
    removed and ``OUT.zarr`` is untouched.
    """
    model, spec, predictor = _predictor(config)
    s = 1.0 if pixel_size_um is None else scale_factor(pixel_size_um, spec.input_pixel_size_um)
    height, width = scaled_shape(slide.height, slide.width, s)
    result.model, result.model_pixel_size_um = spec.name, spec.input_pixel_size_um
    result.mask_height, result.mask_width = height, width
    read = slide_reader(slide)
    with stage("calibrate"):
        sample = resample_window(read, central_window(height, width, CALIBRATION_PX), s)
        if NO_SMEAR not in result.flags:
            calibrate_if_supported(model, sample)
    grid = plan_grid(height, width, spec, config.tiling)
    in_memory = _check_memory(slide, grid, spec, config)
    with stage("write"):
        store = create_slide_store(
            zarr_path,
            key,
            height=height,
            width=width,
            pixel_size_um=spec.input_pixel_size_um,
            classes=spec.classes,
            write_image=config.output.write_image,
            write_probabilities=config.output.write_probabilities,
            attrs=_store_attrs(result, spec, s),
        )
    try:
        _fill(store, read, s, grid, in_memory, result, spec, predictor, config, progress)
        if previews_dir is not None:
            previews_or_note(
                read,
                store.instances["cells"],
                result,
                s,
                previews_dir,
                key,
                config.output.preview_max_side_px,
            )
        with stage("write"):
            publish_slide_store(store)  # only now does OUT.zarr/<key> change
    except BaseException:  # a failure, a stop or an interrupt: no staged group stays behind
        discard_staged_store(store)
        raise


def _fill(
    store: SlideStore,
    read: Reader,
    s: float,
    grid: TileGrid,
    in_memory: bool,
    result: SlideResult,
    spec: ModelSpec,
    predictor: TilePredictor,
    config: ProcessConfig,
    progress: TileProgress | None,
) -> None:
    """Fill a slide's staged group: the tiles and masks, the cells, the quality measures."""
    height, width = store.classes.shape
    merger = _merger(grid, spec, store, in_memory)
    total, done = len(grid), 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(result.slide, done, total)
        check_deadline("the next tiles")

    start = time.perf_counter()
    if NO_SMEAR in result.flags:  # nothing to predict: every pixel background
        with stage("write"):
            fill_no_smear(store, read, s, result, spec.classes)
    else:
        with stage("segment"):
            result.tiles = run_tiles(
                ScaledSlide(read, s, height, width),
                grid,
                predictor,
                merger,
                prefetch_batches=config.inference.prefetch_batches,
                band_rows=0 if in_memory else band_rows_for(grid),
                on_batch=_image_writer(store, grid),
                progress=tick,
            )
        _finish(merger, store, result, spec)
    result.stage_seconds["segment"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    with stage("cells"):
        rbc_um = run_cell_stage(
            store,
            read,
            s,
            spec.input_pixel_size_um,
            result,
            config.cells,
            config.classify,
            _classifier(config),
        )
    result.stage_seconds["cells"] = round(time.perf_counter() - start, 3)
    if result.pixel_size_um is not None and result.pixel_size_method != GIVEN_METHOD:
        with stage("scale"):  # cells implausible at the slide's scale: never reported ok
            check_scale(evidence_from_result(result, rbc_um))
    with stage("quality"):
        review = config.review
        result.quality = slide_quality(
            store,
            read,
            s,
            spec.input_pixel_size_um,
            window_px=review.quality_window_px,
            max_windows=review.quality_max_windows,
        ).as_dict()
        apply_field_flags(result, review)


def _process_into(
    result: SlideResult,
    config: ProcessConfig,
    zarr_path: Path,
    key: str,
    progress: TileProgress | None,
    previews_dir: Path | None = None,
    source: Path | None = None,
    planned: ScaleDecision | None = None,
) -> None:
    """Run every stage for ``source`` (default ``result.path``), filling ``result`` as the
    stages go. ``source`` is the path as found, so a broken link is reported as such;
    ``planned`` is the batch's pixel-size decision (:mod:`smearscan.scale_plan`)."""
    start = time.perf_counter()
    with stage("write"):
        check_key(key)  # before anything is read: outputs must stay inside OUT.zarr/OUT_previews
    path = source or Path(result.path)
    with stage("read"):
        header = check_header(path, config.batch.max_pixels)
        result.width, result.height = header.width, header.height
    with stage("memory"):  # a JPEG/PNG/BMP is decoded whole on opening: judged from its header
        check_decode_memory(header, config.batch.max_memory_mb)
    with stage("read"):
        slide = open_slide(path, config.batch.max_pixels)
    try:
        result.width, result.height, result.notes = slide.width, slide.height, list(slide.notes)
        for note in result.notes:
            log.info("%s: %s", result.slide, note)
        with stage("read"):  # a field without a smear gets no cells, never a differential
            blank = field_content(slide_reader(slide), slide.height, slide.width).blank_reason()
        if blank is not None:
            mark_no_smear(result, blank)  # and its masks are all background (fill_no_smear)
        with stage("scale"):
            decision = resolve_pixel_size(slide, config.scale, blank, planned, result.slide)
            pixel_size = _apply_scale(result, decision)
        _segment(slide, result, pixel_size, config, Path(zarr_path), key, progress, previews_dir)
    finally:
        slide.close()
        result.seconds = round(time.perf_counter() - start, 3)


def process_slide(
    path: Path,
    config: ProcessConfig,
    zarr_path: Path,
    *,
    relative: str | None = None,
    key: str | None = None,
    progress: TileProgress | None = None,
    previews_dir: Path | None = None,
) -> SlideResult:
    """Segment one slide, write its masks into ``zarr_path``, find and measure its cells.

    Args:
        path: Image file.
        config: Run configuration.
        zarr_path: The run's ``OUT.zarr`` directory.
        relative: Name of the slide in the report (default: the file name).
        key: Zarr group name (default: derived from ``relative``).
        progress: Optional per-tile progress callback.
        previews_dir: Where to write the overlay and thumbnail (None: no previews).

    Returns:
        The slide's result, status ``ok``.

    Raises:
        ProcessingError: Any stage failed; ``stage`` says which.
    """
    relative = relative or Path(path).name
    result = SlideResult(slide=relative, path=real_path(path))
    _process_into(
        result, config, zarr_path, key or slide_key(relative), progress, previews_dir, Path(path)
    )
    log.info(
        "%s: %dx%d px at %.4g µm/px (%s), %d tiles, %.2f s",
        relative,
        result.width,
        result.height,
        result.pixel_size_um,
        result.pixel_size_method,
        result.tiles,
        result.seconds,
    )
    return result


def prepare_outputs(outputs: OutputPaths) -> None:
    """Create the run's ``OUT.zarr`` root once, before slides write into it concurrently,
    and remove the staged groups a killed run left (the caller holds the output's lock,
    so no other run is staging there)."""
    update_series(outputs.zarr)  # the root, listing the groups already there
    clear_staging(outputs.zarr)


def run_slide_safely(
    task: SlideTask,
    config: ProcessConfig,
    zarr_path: Path,
    progress: TileProgress | None = None,
    previews_dir: Path | None = None,
) -> SlideResult:
    """:func:`process_slide` that records a failure in the result instead of raising.

    What was learnt before the failure (size, pixel size) stays in the result.
    """
    result = SlideResult(
        slide=task.relative, path=real_path(task.path), group=task.group or task.relative
    )
    try:
        with deadline(config.batch.slide_timeout_s):
            _process_into(
                result, config, zarr_path, task.key, progress, previews_dir, task.path, task.scale
            )
    except ProcessingError as exc:
        # the batch's progress line reports it (console.BatchProgress): once is enough
        log.debug("%s failed at %s: %s", task.relative, exc.stage, exc.message)
        result.status, result.error_stage, result.error = "failed", exc.stage, exc.message
        result.mask_path = ""
        discard_slide_store(zarr_path, task.key)
        result.preview_path = ""
    if not task.grouped:
        result.notes.append(UNGROUPED_NOTE)
    return result
