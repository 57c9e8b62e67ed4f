"""Result records of a run: one :class:`SlideResult` per slide, one :class:`BatchResult` per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SlideResult:
    """What processing one slide produced (one row of the Summary sheet).

    Attributes:
        slide: Path as found under the input (relative to the input root).
        path: Absolute path of the file.
        status: ``ok``, ``failed`` or ``skipped``.
        width: Source columns (px), when the file could be opened.
        height: Source rows (px).
        pixel_size_um: Source pixel size in µm/px.
        pixel_size_method: How the pixel size was obtained.
        camera: The camera profile that gave the pixel size, or the camera
            signature whose pooled calibration did ("" otherwise).
        model: Model name.
        model_pixel_size_um: Scale of the masks in the Zarr group.
        mask_width: Columns of the masks (model scale).
        mask_height: Rows of the masks.
        class_fractions: Share of mask pixels per semantic class.
        tiles: Tiles predicted.
        stitching: ``memory`` or ``zarr-stream``.
        seconds: Wall time for the slide.
        mask_path: The slide's Zarr group (absolute).
        preview_path: Preview image, when one was written.
        error_stage: Stage that failed (failed slides).
        error: Reason (failed slides).
        notes: Conversions and remarks (e.g. 16-bit input scaled to 8-bit).
        flags: Review flags for the lab.
        wbc_count: White cells found (nucleated cells).
        rbc_count: Red cells found.
        platelet_count: Platelets found.
        cell_counts: WBCs per cell type.
        cells: One dict per WBC: the rows of the Cells sheet.
        stage_seconds: Wall time of the main stages (segment, cells).
        quality: Image-quality measures (:mod:`smearscan.quality`): focus as the
            variance of the Laplacian at the model scale, stain optical densities.
        group: Patient/slide group of this field (``--group-by``); the field's
            own name when ungrouped.
        group_flags: Review flags of the whole group (set after the batch).
    """

    slide: str
    path: str
    status: str = "ok"
    width: int | None = None
    height: int | None = None
    pixel_size_um: float | None = None
    pixel_size_method: str = ""
    camera: str = ""
    model: str = ""
    model_pixel_size_um: float | None = None
    mask_width: int | None = None
    mask_height: int | None = None
    class_fractions: dict[str, float] = field(default_factory=dict)
    tiles: int = 0
    stitching: str = ""
    seconds: float = 0.0
    mask_path: str = ""
    preview_path: str = ""
    error_stage: str = ""
    error: str = ""
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    wbc_count: int | None = None
    rbc_count: int | None = None
    platelet_count: int | None = None
    cell_counts: dict[str, int] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    group: str = ""
    group_flags: list[str] = field(default_factory=list)


@dataclass
class GroupResult:
    """The differential of one patient/slide group: its fields' counts added up.

    Attributes:
        group: Group name (``--group-by``; a field's own name when ungrouped).
        fields: Fields of the group processed successfully (summed).
        fields_failed: Fields of the group that failed (left out of the sums).
        wbc_count: WBCs counted over the group's fields.
        cell_counts: WBCs per cell type, over the fields.
        blast_count: Blasts over the fields.
        low_confidence_cells: Cells whose type confidence is below the threshold.
        flags: Review flags of the group.
    """

    group: str
    fields: int = 0
    fields_failed: int = 0
    wbc_count: int = 0
    cell_counts: dict[str, int] = field(default_factory=dict)
    blast_count: int = 0
    low_confidence_cells: int = 0
    flags: list[str] = field(default_factory=list)

    @property
    def blast_percent(self) -> float | None:
        """Blasts / all WBCs counted x 100 (None without WBCs)."""
        return 100.0 * self.blast_count / self.wbc_count if self.wbc_count else None


@dataclass
class OutputPaths:
    """Where a run writes, all derived from the report path ``OUT.xlsx``.

    ``OUT`` is the report's whole name but its ``.xlsx``: ``night.2026-12-04.xlsx``
    writes ``night.2026-12-04.zarr`` and ``night.2026-12-04.log``, never a
    ``night.zarr`` that ``night.2026-12-05.xlsx`` would share.

    Attributes:
        report: ``OUT.xlsx``.
        zarr: ``OUT.zarr`` (one OME-NGFF group per slide).
        log: ``OUT.log``.
        lock: ``OUT.lock``, held while a run writes these outputs
            (:mod:`smearscan.runlock`).
        previews: ``OUT_previews/``.
        cells: ``OUT_cells.parquet``, the Cells rows (``OUT_cells.csv`` without pyarrow).
        ledger: ``OUT_ledger.sqlite``, the default run ledger (its stored results
            in ``OUT_ledger_results/``).
    """

    report: Path
    zarr: Path
    log: Path
    previews: Path
    cells: Path
    ledger: Path
    lock: Path

    @classmethod
    def for_report(cls, report: Path) -> OutputPaths:
        """Derive every output path from the report path (its name but the last suffix)."""
        report = Path(report)
        base = report.with_suffix("").name
        folder = report.parent
        return cls(
            report=report,
            zarr=folder / f"{base}.zarr",
            log=folder / f"{base}.log",
            previews=folder / f"{base}_previews",
            cells=folder / f"{base}_cells.parquet",
            ledger=folder / f"{base}_ledger.sqlite",
            lock=folder / f"{base}.lock",
        )


@dataclass
class BatchResult:
    """Outcome of :func:`smearscan.batch.process_batch`.

    Attributes:
        results: One result per slide, in input order.
        outputs: Where everything was written.
        run_info: What the Run sheet records.
        groups: One differential per patient/slide group, in first-field order.
        processed: Slides run by this batch (with a ledger, the others were done before).
        stopped: The signal that stopped the batch early (SIGINT, SIGTERM), else "".
    """

    results: list[SlideResult]
    outputs: OutputPaths
    run_info: dict[str, Any] = field(default_factory=dict)
    groups: list[GroupResult] = field(default_factory=list)
    processed: int = 0
    stopped: str = ""

    @property
    def failed(self) -> list[SlideResult]:
        """Slides that failed."""
        return [r for r in self.results if r.status == "failed"]
