"""Where each slide's pixel size comes from, decided for a whole batch before any slide runs.

The order, first that applies (the Summary's ``pixel_size_method`` says which):

1. ``--pixel-size`` (``scale.pixel_size_um``): every slide;
2. a camera profile (``[[scale.cameras]]``, :mod:`smearscan.cameras`) matching
   the slide's dimensions, path and EXIF/TIFF make and model: the first that matches;
3. a pixel size stored in the file (TIFF resolution; ``scale.use_metadata``);
4. the slide's camera calibration (``scale.pool``, on by default): the
   slides left are grouped by camera signature (dimensions, make and model,
   input folder), each field's RBC diameters are measured, and each camera
   gets one pixel size pooled over its fields (:mod:`smearscan.calibration`),
   or the one the ledger stored for it on an earlier night
   (:mod:`smearscan.ledger_calibration`). A field with too few RBCs of its own
   takes its camera's value; one whose own estimate is out of line gets the
   camera's value and the flag ``SCALE_OUTLIER``;
5. the field's own RBCs (``scale.pool = false``, or a slide processed alone).

:func:`plan_scales` is the batch's pre-pass (a header read, and for the
slides of step 4 one decode of the central window, on ``batch.workers``
threads); :func:`resolve_pixel_size` is what the pipeline applies to a slide
(its planned decision, or steps 1-3 and 5 for a slide processed alone).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smearscan.calibration import Calibration, FieldRbcs, field_outlier, pool_fields
from smearscan.cameras import CameraInfo, camera_signature, match_profile, read_camera_info
from smearscan.config import ProcessConfig, ScaleConfig
from smearscan.errors import ScaleEstimationError, SmearscanError
from smearscan.scale import estimate_pixel_size, rbc_diameters_px
from smearscan.tiling import Window

if TYPE_CHECKING:
    from smearscan.ledger import Ledger
    from smearscan.slide_io import Slide

log = logging.getLogger(__name__)

#: Flag of a field whose own RBC estimate is out of line with its camera's value.
SCALE_OUTLIER = "SCALE_OUTLIER"
#: ``pixel_size_method`` of a slide whose pixel size was given (``--pixel-size``): the
#: one the plausibility guard (:mod:`smearscan.plausibility`) leaves to the user.
GIVEN_METHOD = "given (--pixel-size)"
#: RBCs a field needs for an estimate of its own (as :func:`estimate_pixel_size`).
MIN_FIELD_RBCS = 5


@dataclass(frozen=True)
class ScaleDecision:
    """A slide's pixel size, decided before it runs.

    Attributes:
        pixel_size_um: Source µm/px.
        method: How it was obtained (the Summary's ``pixel_size_method``).
        origin: ``given``, ``profile``, ``metadata``, ``camera`` (a pooled
            calibration) or ``field`` (the field's own RBCs).
        camera: The camera profile's name or the calibration's signature ("" otherwise).
        flags: Review flags to add (``SCALE_OUTLIER``).
        notes: Notes to add (why the flag).
    """

    pixel_size_um: float
    method: str
    origin: str
    camera: str = ""
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def central_window(height: int, width: int, side: int) -> Window:
    """The central ``side`` x ``side`` window of a slide (the whole of a smaller one)."""
    h, w = min(height, side), min(width, side)
    y0, x0 = (height - h) // 2, (width - w) // 2
    return Window(y0, y0 + h, x0, x0 + w)


def _sample(slide: Slide, side: int) -> np.ndarray:
    """RGB uint8 ``(h, w, 3)`` of the slide's central window (source pixels)."""
    from smearscan.slide_io import read_region

    w = central_window(slide.height, slide.width, side)
    return read_region(slide, w.y0, w.y1, w.x0, w.x1, pad_mode="symmetric")


def fixed_decision(
    scale: ScaleConfig, info: CameraInfo | None, stored_um: float | None
) -> ScaleDecision | None:
    """Steps 1-3 of the module: ``--pixel-size``, a camera profile, the file's metadata."""
    if scale.pixel_size_um is not None:
        return ScaleDecision(scale.pixel_size_um, GIVEN_METHOD, "given")
    profile = match_profile(scale.cameras, info) if info is not None else None
    if profile is not None:
        return ScaleDecision(
            profile.pixel_size_um, f"camera profile '{profile.name}'", "profile", profile.name
        )
    if scale.use_metadata and stored_um is not None:
        return ScaleDecision(stored_um, "file metadata", "metadata")
    return None


def resolve_pixel_size(
    slide: Slide,
    scale: ScaleConfig,
    no_smear: str | None = None,
    planned: ScaleDecision | None = None,
    relative: str | None = None,
) -> ScaleDecision | None:
    """A slide's pixel size: its planned decision, else steps 1-3 and 5 of the module.

    Args:
        slide: The open slide.
        scale: The scale settings.
        no_smear: Why the field has no smear (None: it has one): such a field
            needs no pixel size (None: masks at the model's scale) unless given.
        planned: The batch's decision for the slide (:func:`plan_scales`); a
            field without a smear does not take its camera's calibration.
        relative: The slide's name under its input (for a profile's glob).

    Raises:
        ScaleEstimationError: Nothing given, stored or planned, and too few RBCs.
    """
    if planned is not None and (no_smear is None or planned.origin != "camera"):
        return planned
    info = _camera_info(Path(slide.path), relative or Path(slide.path).name)
    fixed = fixed_decision(scale, info, slide.pixel_size_um)
    if fixed is not None or no_smear is not None:
        return fixed
    estimate = estimate_pixel_size(
        _sample(slide, scale.sample_px), rbc_diameter_um=scale.rbc_diameter_um
    )
    return ScaleDecision(estimate.pixel_size_um, estimate.method, "field")


def _camera_info(path: Path, relative: str) -> CameraInfo | None:
    """The slide's camera info, or None when its header cannot be read (it fails later)."""
    try:
        return read_camera_info(path, relative)
    except (SmearscanError, OSError, ValueError) as exc:
        log.debug("%s: no camera info: %s", relative, exc)
        return None


@dataclass(frozen=True)
class _Survey:
    """What the pre-pass learnt of one slide: a fixed decision, or its camera and RBCs."""

    key: str
    decision: ScaleDecision | None = None
    signature: str = ""
    field: FieldRbcs | None = None
    info: CameraInfo | None = None


def _survey(task: Any, config: ProcessConfig) -> _Survey:
    """Steps 1-3 for one slide, else its signature and RBC diameters (never raises)."""
    from smearscan.image_header import check_header
    from smearscan.limits import check_decode_memory
    from smearscan.slide_io import open_slide

    info = _camera_info(Path(task.path), task.relative)
    fixed = fixed_decision(config.scale, info, None)
    if fixed is not None or info is None:
        return _Survey(task.key, fixed)
    try:
        header = check_header(Path(task.path), config.batch.max_pixels)
        check_decode_memory(header, config.batch.max_memory_mb)
        slide = open_slide(Path(task.path), config.batch.max_pixels)
        try:
            fixed = fixed_decision(config.scale, info, slide.pixel_size_um)
            if fixed is not None:
                return _Survey(task.key, fixed)
            diameters = rbc_diameters_px(_sample(slide, config.scale.sample_px))
        finally:
            slide.close()
    except Exception as exc:  # the slide's own run reports it, at its stage
        log.debug("%s: not surveyed for calibration: %s", task.relative, exc)
        return _Survey(task.key)
    folder = Path(task.relative).parent.as_posix()
    signature = camera_signature(info, str(Path(task.path).parent) if folder == "." else folder)
    field = FieldRbcs(task.relative, diameters)
    return _Survey(task.key, signature=signature, field=field, info=info)


def _pool_camera(signature: str, surveys: list[_Survey], scale: ScaleConfig) -> Calibration:
    """:func:`pool_fields` over the surveyed fields of one camera, with the scale settings.

    Raises:
        ScaleEstimationError: Too few RBCs in all its fields together.
    """
    fields = [s.field for s in surveys if s.field is not None]
    return pool_fields(
        signature,
        fields,
        rbc_diameter_um=scale.rbc_diameter_um,
        min_rbcs=MIN_FIELD_RBCS,
        tolerance=scale.outlier_tolerance,
    )


def _by_camera(surveys: Sequence[_Survey]) -> list[tuple[str, list[_Survey]]]:
    """The surveys that measured a field, grouped by camera signature, sorted."""
    groups: dict[str, list[_Survey]] = defaultdict(list)
    for s in surveys:
        if s.field is not None:
            groups[s.signature].append(s)
    return sorted(groups.items())


def _calibrate(
    signature: str,
    surveys: list[_Survey],
    scale: ScaleConfig,
    ledger: Ledger | None,
    recalibrate: bool,
) -> Calibration | None:
    """The camera's calibration: stored in the ledger, else pooled now (and stored)."""
    from smearscan.ledger_calibration import store_calibration, stored_calibration

    if ledger is not None and not recalibrate:
        stored = stored_calibration(ledger, signature)
        if stored is not None:
            return stored
    try:
        calibration = _pool_camera(signature, surveys, scale)
    except ScaleEstimationError as exc:
        log.warning("%s", exc)
        return None
    if ledger is not None:
        store_calibration(ledger, calibration)
    return calibration


def _decisions(
    calibration: Calibration, surveys: list[_Survey], tolerance: float
) -> dict[str, ScaleDecision]:
    """Each field of a calibrated camera: its value, flagged when its own estimate is off."""
    out = {}
    for s in surveys:
        assert s.field is not None
        why = field_outlier(s.field, calibration, min_rbcs=MIN_FIELD_RBCS, tolerance=tolerance)
        out[s.key] = ScaleDecision(
            calibration.pixel_size_um,
            calibration.method(),
            "camera",
            camera=calibration.signature,
            flags=(SCALE_OUTLIER,) if why else (),
            notes=(why,) if why else (),
        )
    return out


def _surveys(tasks: Sequence[Any], config: ProcessConfig) -> list[_Survey]:
    """:func:`_survey` of every task, on ``batch.workers`` threads, in task order."""
    with ThreadPoolExecutor(max(1, config.batch.workers)) as pool:
        return list(pool.map(lambda t: _survey(t, config), tasks))


def survey_cameras(
    tasks: Sequence[Any], config: ProcessConfig
) -> list[tuple[Calibration | str, CameraInfo, int]]:
    """What ``smearscan calibrate`` prints: each camera signature of the slides without a
    profile or stored pixel size, pooled (:func:`pool_fields`).

    Returns:
        Per signature, sorted: ``(its calibration, or why it has none; the camera info
        of its first slide; its number of slides)``.
    """
    out: list[tuple[Calibration | str, CameraInfo, int]] = []
    for signature, group in _by_camera(_surveys(tasks, config)):
        try:
            found: Calibration | str = _pool_camera(signature, group, config.scale)
        except ScaleEstimationError as exc:
            found = str(exc)
        assert group[0].info is not None
        out.append((found, group[0].info, len(group)))
    return out


def plan_scales(
    tasks: Sequence[Any],
    config: ProcessConfig,
    ledger: Ledger | None = None,
    *,
    recalibrate: bool = False,
) -> tuple[dict[str, ScaleDecision], list[Calibration]]:
    """The pixel size of every slide that will run, by task key (see the module).

    Args:
        tasks: The slides to run (``path``, ``relative``, ``key``).
        config: The run configuration.
        ledger: The run ledger: its stored calibrations are reused, new ones stored.
        recalibrate: Pool again even where the ledger has a calibration (``--force``).

    Returns:
        ``(decisions by task key, the cameras' calibrations used)``. A slide
        without a decision (unreadable, or its camera could not be calibrated)
        falls back on its own RBCs in the pipeline and fails there with its reason.
    """
    if config.scale.pixel_size_um is not None or not tasks:
        return {}, []
    surveys = _surveys(tasks, config)
    decisions = {s.key: s.decision for s in surveys if s.decision is not None}
    used = []
    for signature, group in _by_camera(surveys) if config.scale.pool else []:
        calibration = _calibrate(signature, group, config.scale, ledger, recalibrate)
        if calibration is None:
            continue
        used.append(calibration)
        log.info("camera %s", calibration.summary())
        decisions |= _decisions(calibration, group, config.scale.outlier_tolerance)
    return decisions, used
