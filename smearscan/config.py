"""Configuration of a processing run: frozen dataclasses, one per stage.

Values come from defaults, an optional TOML file (``--config``) and then the
command-line options, in that order. A TOML file and overrides are checked
against the type hints with strict types (:mod:`smearscan.config_schema`:
unknown keys, ``"false"`` for a boolean, a string for a list, ``nan``), then
ranges in ``__post_init__``; invalid values raise
:class:`~smearscan.errors.ConfigError` naming the option. Units are part of
the names (``pixel_size_um``, ``_px``).

TOML layout (every key optional)::

    model = "unet-v1"
    [tiling]
    tile_size_px = 1024
    overlap_px = 32
    [inference]
    device = "auto"
    batch_size = 8
    [scale]
    pixel_size_um = 0.1
    [[scale.cameras]]           # one table per camera, first match applies
    name = "ward-3 DM96"
    pixel_size_um = 0.1
    width = 2592                # rules (all that are given must match):
    height = 1944               # image size, glob on the path, EXIF make/model
    [output]
    write_probabilities = true
    [batch]
    workers = 2
    [review]
    group_by = '^(Im[0-9]+)'
    min_wbc_count = 100
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from smearscan.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]


def _fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")


def _positive(name: str, value: float | int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


#: Plausible pixel sizes, µm/px (a given pixel size and every camera profile's).
PIXEL_SIZE_RANGE_UM = (0.01, 10.0)


def _pixel_size_problem(value: float) -> str | None:
    """Why a pixel size (µm/px) is implausible, or None when it is in
    :data:`PIXEL_SIZE_RANGE_UM`."""
    low, high = PIXEL_SIZE_RANGE_UM
    if low <= value <= high:
        return None
    return f"{value} is outside {low:g}-{high:g} µm/px; smear images are usually 0.05-0.5 µm/px"


#: The segmentation model of ``process`` when none is named (a name of
#: :mod:`smearscan.registry`).
DEFAULT_MODEL = "unet-v1"

#: The cell classifier of ``process`` when none is named: a shipped classifier
#: name, ``PATH.pt`` or ``rules`` (morphometric rules only).
DEFAULT_CLASSIFIER = "cellnet-v1"


@dataclass(frozen=True)
class TilingConfig:
    """How a slide is cut into tiles for the model.

    Attributes:
        tile_size_px: Tile side at the model's input scale (rounded up to the
            model's size multiple); None uses the model's preferred size.
        overlap_px: Width of the blending ramp between neighbouring tiles.
        halo_px: Context margin per side; None uses the model's receptive field.
        in_memory_limit_mb: Slides whose probability map would exceed this are
            stitched chunk by chunk straight into Zarr instead of in memory.
    """

    tile_size_px: int | None = None
    overlap_px: int = 32
    halo_px: int | None = None
    in_memory_limit_mb: int = 256

    def __post_init__(self) -> None:
        if self.tile_size_px is not None:
            _positive("tiling.tile_size_px", self.tile_size_px)
        _positive("tiling.in_memory_limit_mb", self.in_memory_limit_mb)
        if self.overlap_px < 0:
            raise ConfigError(f"tiling.overlap_px must be >= 0, got {self.overlap_px}")
        if self.halo_px is not None and self.halo_px < 0:
            raise ConfigError(f"tiling.halo_px must be >= 0, got {self.halo_px}")


@dataclass(frozen=True)
class InferenceConfig:
    """Where and how tiles go through the model.

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        batch_size: Tiles per forward pass.
        amp: Mixed precision on CUDA (ignored on CPU).
        prefetch_batches: Batches read and resampled ahead of the model.
    """

    device: Device = "auto"
    batch_size: int = 8
    amp: bool = True
    prefetch_batches: int = 2

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"inference.device must be auto, cpu or cuda, got {self.device!r}")
        _positive("inference.batch_size", self.batch_size)
        _positive("inference.prefetch_batches", self.prefetch_batches)


class CameraProfileError(ConfigError, ValueError):
    """An invalid :class:`CameraProfile` value.

    A :class:`ValueError` too, so that the schema check
    (:mod:`smearscan.config_schema`) learns which ``[[scale.cameras]]`` table
    (its index) holds it and names it as ``[scale] cameras[1].width``.

    Args:
        key: The offending key of the profile (``pixel_size_um``, ``width``...),
            or ``""`` for the table as a whole.
        reason: What is wrong with it.
        camera: The profile's name, when it has one.
    """

    def __init__(self, key: str, reason: str, camera: str = "") -> None:
        self.key, self.reason, self.camera = key, reason, camera
        super().__init__(f"scale.cameras{self.suffix}: {reason}")

    @property
    def suffix(self) -> str:
        """``.width (camera 'ward-3')``: the key and camera after ``cameras[i]``."""
        key = f".{self.key}" if self.key else ""
        return f"{key} (camera {self.camera!r})" if self.camera else key


@dataclass(frozen=True)
class CameraProfile:
    """One camera of the lab and its fixed pixel size (a ``[[scale.cameras]]`` table).

    A slide is from this camera when every rule the profile has matches
    (:func:`smearscan.cameras.match_profile`); a profile has at least one rule.

    Attributes:
        name: The camera's name in reports and the ledger (unique in a config).
        pixel_size_um: Micrometres per pixel of its images (0.01-10).
        width: Rule: image width as stored in the file, pixels (with ``height``).
        height: Rule: image height as stored in the file, pixels (with ``width``).
        glob: Rule: fnmatch-style pattern on the slide's path relative to its
            input folder (posix), also tried on the absolute path; ``**``
            crosses folders, ``*`` does not.
        make: Rule: EXIF/TIFF ``Make`` tag (case-insensitive, stripped, exact).
        model: Rule: EXIF/TIFF ``Model`` tag (case-insensitive, stripped, exact).
    """

    name: str
    pixel_size_um: float
    width: int | None = None
    height: int | None = None
    glob: str | None = None
    make: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        name = self.name if isinstance(self.name, str) else ""
        if not name.strip():
            raise CameraProfileError("name", f"must be a non-empty string, got {self.name!r}")
        problem = _pixel_size_problem(self.pixel_size_um)
        if problem:
            raise CameraProfileError("pixel_size_um", problem, name)
        if (self.width is None) != (self.height is None):
            given = "width" if self.height is None else "height"
            raise CameraProfileError(
                given, "width and height are given together (both or neither)", name
            )
        for key in ("width", "height"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise CameraProfileError(key, f"must be > 0 pixels, got {value}", name)
        for key in ("glob", "make", "model"):
            value = getattr(self, key)
            if value is not None and not value.strip():
                raise CameraProfileError(key, "must not be empty (leave the key out)", name)
        if not self.rules:
            raise CameraProfileError(
                "", "a camera needs at least one rule: width and height, glob, make or model", name
            )

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules this profile has: some of ``size``, ``glob``, ``make``, ``model``."""
        given = {
            "size": self.width is not None,
            "glob": self.glob is not None,
            "make": self.make is not None,
            "model": self.model is not None,
        }
        return tuple(rule for rule, present in given.items() if present)


@dataclass(frozen=True)
class ScaleConfig:
    """How the pixel size of each slide is known.

    In order: ``pixel_size_um`` (``--pixel-size``) for every slide; else the
    first camera profile that matches the slide; else the file's metadata
    (``use_metadata``); else an estimate from the RBCs, pooled per camera over
    the batch when ``pool`` is set.

    Attributes:
        pixel_size_um: Micrometres per pixel of every input; None means: a
            camera profile, the file's metadata, else an estimate from the RBCs.
        rbc_diameter_um: Median RBC diameter used as the ruler.
        use_metadata: Trust a pixel size stored in the file (TIFF resolution).
        sample_px: Side of the central window used for estimation on large slides.
        cameras: The lab's cameras (``[[scale.cameras]]`` tables, names
            unique); the first that matches a slide gives its pixel size.
        pool: Pool the RBC-based estimates of the slides of one camera (same
            :func:`smearscan.cameras.camera_signature`) over a batch.
        outlier_tolerance: Relative deviation (0.15: 15 %) from its camera's
            pooled estimate beyond which a slide's own estimate is an
            outlier; strictly between 0 and 1.
    """

    pixel_size_um: float | None = None
    rbc_diameter_um: float = 7.5
    use_metadata: bool = True
    sample_px: int = 4096
    cameras: tuple[CameraProfile, ...] = ()
    pool: bool = True
    outlier_tolerance: float = 0.15

    def __post_init__(self) -> None:
        if self.pixel_size_um is not None:
            _positive("scale.pixel_size_um", self.pixel_size_um)
            problem = _pixel_size_problem(self.pixel_size_um)
            if problem:
                raise ConfigError(f"scale.pixel_size_um={problem}")
        _positive("scale.rbc_diameter_um", self.rbc_diameter_um)
        _positive("scale.sample_px", self.sample_px)
        if not 0.0 < self.outlier_tolerance < 1.0:
            raise ConfigError(
                f"scale.outlier_tolerance must be in (0, 1), got {self.outlier_tolerance}"
            )
        object.__setattr__(self, "cameras", tuple(self.cameras))  # a list from Python callers
        first: dict[str, int] = {}
        for index, camera in enumerate(self.cameras):
            if not isinstance(camera, CameraProfile):
                raise ConfigError(f"scale.cameras[{index}] must be a camera table, got {camera!r}")
            key = camera.name.strip().casefold()
            if key in first:
                raise ConfigError(
                    f"scale.cameras[{index}].name {camera.name!r} repeats "
                    f"scale.cameras[{first[key]}]; camera names must be unique"
                )
            first[key] = index


@dataclass(frozen=True)
class CellsConfig:
    """How cells are separated and counted (µm, µm²); see :mod:`smearscan.instances`.

    Attributes:
        lobe_link_um: A nucleus fragment smaller than ``lobe_max_area_um2`` and
            closer than this to another fragment is a lobe of the same cell.
        lobe_max_area_um2: Fragments this large are whole nuclei (or large lobes):
            two of them are never joined by distance alone, so two touching cells
            whose nuclei come close stay two cells.
        min_nucleus_area_um2: Smaller nuclei are debris or platelets on a cell.
        min_cell_area_um2: Smaller cells are debris.
        max_cell_diameter_um: Largest WBC expected (monocytes up to ~20 µm);
            sets the window halo.
        cytoplasm_reach_um: Cytoplasm farther than this from its nucleus is
            not part of the cell (stray cytoplasm-coloured regions).
        rbc_diameter_um: Nominal RBC diameter (peak spacing, area filters).
        platelet_area_um2: Accepted platelet area range.
        window_px: Side of the processing windows on large slides (model px).
    """

    lobe_link_um: float = 1.2
    lobe_max_area_um2: float = 20.0
    min_nucleus_area_um2: float = 10.0
    min_cell_area_um2: float = 20.0
    max_cell_diameter_um: float = 25.0
    cytoplasm_reach_um: float = 6.0
    rbc_diameter_um: float = 7.5
    platelet_area_um2: tuple[float, float] = (0.8, 12.0)
    window_px: int = 2048

    def __post_init__(self) -> None:
        for name in (
            "lobe_link_um",
            "lobe_max_area_um2",
            "min_nucleus_area_um2",
            "min_cell_area_um2",
            "max_cell_diameter_um",
            "cytoplasm_reach_um",
            "rbc_diameter_um",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"cells.{name} must be > 0, got {getattr(self, name)}")
        lo, hi = self.platelet_area_um2
        if not 0 <= lo < hi:
            raise ConfigError(f"cells.platelet_area_um2 must be (low, high), got {lo, hi}")
        if self.window_px < 256:
            raise ConfigError(f"cells.window_px must be >= 256, got {self.window_px}")


@dataclass(frozen=True)
class ClassifyConfig:
    """How cells are typed and blasts scored; see :mod:`smearscan.classify` and
    :mod:`smearscan.blast` (the rule and its thresholds are in the classifier's model card).

    The morphological blast score is the product of soft memberships (1 inside
    the range, falling linearly to 0 over the ``*_soft`` margin outside it):
    size against the median RBC diameter, N:C area ratio, nucleus circularity,
    a single-lobed nucleus, and cytoplasm that is not granulocyte-dark.

    Attributes:
        classifier: Shipped classifier name, ``PATH.pt`` of one trained with
            ``smearscan train --task classify``, or ``rules`` (no network).
        blast_threshold: A cell is a blast when its blast probability reaches this.
        blast_size_vs_rbc: ``(low, high)`` cell diameter in RBC diameters with full
            blast membership (blasts 10-18 µm against 7.5 µm RBCs).
        blast_size_soft: Margin of the size membership, in RBC diameters.
        blast_min_nc_ratio: Nucleus area / cell area from which membership is full.
        blast_nc_soft: Margin below ``blast_min_nc_ratio``.
        blast_min_nucleus_circularity: Round or oval nucleus from this circularity.
        blast_circularity_soft: Margin below ``blast_min_nucleus_circularity``.
        granulocyte_veto: Weight of the classifier's granulocyte probability
            (neutrophil + eosinophil + basophil) against the morphological score;
            0 by default: a classifier that never saw a blast nor the lab's stain
            called 15 of 24 synthetic blasts granulocytes, while on 600 held-out
            PBC cells the veto removed no false blast (see the classifier's model card).
    """

    classifier: str = DEFAULT_CLASSIFIER
    blast_threshold: float = 0.5
    blast_size_vs_rbc: tuple[float, float] = (1.5, 2.8)
    blast_size_soft: float = 0.12
    blast_min_nc_ratio: float = 0.8
    blast_nc_soft: float = 0.08
    blast_min_nucleus_circularity: float = 0.75
    blast_circularity_soft: float = 0.15
    granulocyte_veto: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.classifier, str) or not self.classifier:
            raise ConfigError(
                f"classify.classifier must be a name or path, got {self.classifier!r}"
            )
        if not 0.0 < self.blast_threshold <= 1.0:
            raise ConfigError(
                f"classify.blast_threshold must be in (0, 1], got {self.blast_threshold}"
            )
        lo, hi = self.blast_size_vs_rbc
        if not 0 < lo < hi:
            raise ConfigError(f"classify.blast_size_vs_rbc must be (low, high), got {lo, hi}")
        for name in ("blast_size_soft", "blast_nc_soft", "blast_circularity_soft"):
            _positive(f"classify.{name}", getattr(self, name))
        for name in ("blast_min_nc_ratio", "blast_min_nucleus_circularity", "granulocyte_veto"):
            _fraction(f"classify.{name}", getattr(self, name))


@dataclass(frozen=True)
class OutputConfig:
    """What is written besides the report.

    Attributes:
        write_probabilities: Store the blended probability map (uint8, p*255).
        write_image: Store the resampled RGB image the masks refer to.
        write_previews: Write ``OUT_previews/`` (overlay and thumbnail per slide,
            ``index.html``).
        preview_max_side_px: Longest side of an overlay PNG; larger slides are
            downscaled (fields up to this size keep their own resolution).
    """

    write_probabilities: bool = True
    write_image: bool = True
    write_previews: bool = True
    preview_max_side_px: int = 4096

    def __post_init__(self) -> None:
        if self.preview_max_side_px < 256:
            raise ConfigError(
                f"output.preview_max_side_px must be at least 256, got {self.preview_max_side_px}"
            )


@dataclass(frozen=True)
class BatchConfig:
    """How many slides run at once and where.

    Attributes:
        workers: Slides processed concurrently by the local Dask scheduler.
        scheduler: ``host:port`` of a dask.distributed scheduler, or None for local.
        patterns: Glob patterns selecting input files (empty: all image files).
        max_pixels: Largest image (width x height pixels of level 0, read from
            the header before decoding) a slide may claim; larger ones fail at
            the ``read`` stage (decompression bombs). Default about 50000 x 50000.
        ledger: SQLite run ledger (:mod:`smearscan.batch_ledger`): slides done
            before with the same content, models and settings are not run again.
            None: ``OUT_ledger.sqlite`` beside the report.
        use_ledger: False: no ledger, every slide runs (``--no-ledger``).
        force: With a ledger, run every slide again.
        retry_failed: With a ledger, run slides that failed before again.
        slide_timeout_s: A slide still running after this many seconds fails
            (stage ``timeout``) and the batch goes on; checked between stages,
            tile batches and cell blocks (:mod:`smearscan.limits`). None: no limit.
        max_memory_mb: A slide whose estimated peak memory (decoded source,
            masks, one batch of tiles through the network) exceeds this fails at
            the ``memory`` stage before it starts. None: no limit.
        since: With a ledger, the report covers the slides this run processed
            and every slide the ledger records done or failed at or after this
            time, whatever the inputs (slides of the inputs done before it are
            left out): an ISO date or time (local time unless it has an
            offset), a span back from now (``36h``, ``7d``) or ``all``. None:
            every slide of this run's inputs.
    """

    workers: int = 1
    scheduler: str | None = None
    patterns: tuple[str, ...] = ()
    max_pixels: int = 2_500_000_000
    ledger: str | None = None
    use_ledger: bool = True
    force: bool = False
    retry_failed: bool = False
    slide_timeout_s: float | None = None
    max_memory_mb: int | None = None
    since: str | None = None

    def __post_init__(self) -> None:
        _positive("batch.workers", self.workers)
        if self.slide_timeout_s is not None:
            _positive("batch.slide_timeout_s", self.slide_timeout_s)
        if self.max_memory_mb is not None:
            _positive("batch.max_memory_mb", self.max_memory_mb)
        if self.since is not None:
            from smearscan.since import parse_since

            parse_since(self.since)  # ConfigError now rather than after the slides ran
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int | float):
            raise ConfigError(f"batch.max_pixels must be a number, got {self.max_pixels!r}")
        _positive("batch.max_pixels", self.max_pixels)
        object.__setattr__(self, "max_pixels", int(self.max_pixels))  # TOML may give 2.5e9


@dataclass(frozen=True)
class ReviewConfig:
    """Review flags, image-quality thresholds and grouping of fields into slides.

    See :mod:`smearscan.flags`, :mod:`smearscan.quality` and :mod:`smearscan.grouping`.

    Attributes:
        group_by: Group several field images into one patient/slide: a regular
            expression applied to the file name (named group ``group``, else
            group 1, else the whole match) or the path of a CSV manifest with
            columns ``image,group``. None: every field is its own group.
        min_wbc_count: A group with fewer WBCs counted gets ``LOW_WBC_COUNT``
            (CLSI H20 counts 100 or 200).
        low_confidence_threshold: A cell whose ``type_confidence`` is below
            this counts as low-confidence.
        low_confidence_share: ``LOW_CONFIDENCE_CELLS`` when the share of
            low-confidence cells exceeds this.
        min_focus_laplacian_var: ``POOR_STAIN_OR_FOCUS`` when the variance of
            the Laplacian of the smear pixels (grey levels², at 0.2 µm/px) is
            below this. Calibrated on real fields of six sources: ordinary
            fields 137-5700, blurred by a Gaussian of 1 µm at most 40.
        min_stain_od: ``POOR_STAIN_OR_FOCUS`` when the optical density of the
            smear pixels (most absorbed channel) is below this; ordinary
            fields 0.059-0.61.
        min_nucleus_saturation: ``POOR_STAIN_OR_FOCUS`` when the mean HSV
            saturation (0-1) of the WBC nucleus pixels is below this (fields
            with nuclei only); ordinary fields 0.32-0.85.
        quality_window_px: Side of the windows sampled for the quality measures
            (model px).
        quality_max_windows: Most windows sampled per slide.
    """

    group_by: str | None = None
    min_wbc_count: int = 100
    low_confidence_threshold: float = 0.5
    low_confidence_share: float = 0.2
    min_focus_laplacian_var: float = 60.0
    min_stain_od: float = 0.05
    min_nucleus_saturation: float = 0.30
    quality_window_px: int = 1024
    quality_max_windows: int = 9

    def __post_init__(self) -> None:
        if self.group_by is not None and not str(self.group_by).strip():
            raise ConfigError("review.group_by must be a pattern or a CSV path, got ''")
        if self.min_wbc_count < 0:
            raise ConfigError(f"review.min_wbc_count must be >= 0, got {self.min_wbc_count}")
        for name in ("low_confidence_threshold", "low_confidence_share"):
            _fraction(f"review.{name}", getattr(self, name))
        for name in ("min_focus_laplacian_var", "min_stain_od", "min_nucleus_saturation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"review.{name} must be >= 0, got {getattr(self, name)}")
        if self.quality_window_px < 64:
            raise ConfigError(
                f"review.quality_window_px must be >= 64, got {self.quality_window_px}"
            )
        _positive("review.quality_max_windows", self.quality_max_windows)


@dataclass(frozen=True)
class ProcessConfig:
    """Everything ``smearscan process`` needs besides the inputs and the report path."""

    model: str = DEFAULT_MODEL
    tiling: TilingConfig = field(default_factory=TilingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    cells: CellsConfig = field(default_factory=CellsConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of every parameter (for the report's Run sheet)."""
        return dataclasses.asdict(self)

    def with_overrides(self, **sections: Any) -> ProcessConfig:
        """A copy with some fields replaced; ``None`` values leave a field as it is.

        Args:
            sections: ``model=...`` or a section name mapped to ``{field: value}``.

        Raises:
            ConfigError: Unknown section or field, or an invalid value.
        """
        return _merge(self, {k: v for k, v in sections.items() if v is not None})


def _merge(config: ProcessConfig, values: dict[str, Any]) -> ProcessConfig:
    """``config`` with ``values`` (``model`` and ``{section: {key: value}}``) laid over it,
    validated by :func:`smearscan.config_schema.validate_config` (strict types, no
    unknown section or key); ``None`` values inside a section leave the key as it is."""
    from smearscan.config_schema import validate_config

    data = config.to_dict()
    for key, value in _plain(values).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update({k: v for k, v in value.items() if v is not None})
        else:
            data[key] = value
    merged = validate_config(data)
    if not merged.model:
        raise ConfigError("model must be a non-empty string, got ''")
    return merged


def _plain(value: Any) -> Any:
    """``value`` with config dataclasses (a :class:`CameraProfile` given as an override)
    turned into dicts, so that the schema check sees TOML-like values only."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_config(path: Path | None) -> ProcessConfig:
    """Read a TOML configuration file (or return the defaults for None).

    Types are strict (see :mod:`smearscan.config_schema`): ``"false"`` is not a
    boolean, a string is not a list, ``nan`` is not a number.

    Raises:
        ConfigError: The file is missing or unreadable, not valid TOML, or has an
            unknown section or key or a value of the wrong type or range (the
            message starts with the file and names each key, the expected type
            and the value).
    """
    if path is None:
        return ProcessConfig()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:  # a folder, unreadable...
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
    try:
        return _merge(ProcessConfig(), data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
