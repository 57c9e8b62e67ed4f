"""Library API of a batch: :func:`process_batch` finds the slides, runs them, writes the report.

The slides of a batch are listed (:mod:`smearscan.inputs`), named
(:mod:`smearscan.slide_keys`), grouped, checked against the run ledger
(:mod:`smearscan.batch_ledger`), run concurrently on Dask
(:mod:`smearscan.executor`, each slide by
:func:`smearscan.pipeline.run_slide_safely`), and summarised into the report
and the review page. The segmentation stack (torch, the models, Zarr) is
imported only when at least one slide has to run, so a nightly re-run over a
folder whose slides are all done takes about as long as writing the report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from smearscan.batch_ledger import (
    ledger_path,
    open_batch_ledger,
    results_dir_for,
    run_with_ledger,
)
from smearscan.config import ProcessConfig
from smearscan.executor import run_tasks
from smearscan.flags import summarise_groups
from smearscan.grouping import assign_groups
from smearscan.inputs import list_inputs
from smearscan.leftovers import clear_leftovers
from smearscan.provenance import run_info
from smearscan.report import write_report
from smearscan.results import BatchResult, GroupResult, OutputPaths, SlideResult
from smearscan.review_page import write_review_page
from smearscan.runlock import ledger_lock_path, lock_path_for
from smearscan.slide_keys import unique_keys
from smearscan.stopping import StopRequest, unless_stopped

log = logging.getLogger(__name__)

#: Progress callback: (slide name, tiles done so far, tiles in the slide).
TileProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SlideTask:
    """One slide of a batch: file, name in the report, Zarr group name, patient/slide group,
    and its pixel-size decision (:class:`smearscan.scale_plan.ScaleDecision`, set by the
    batch's calibration pre-pass; None: the pipeline decides)."""

    path: Path
    relative: str
    key: str
    group: str = ""
    grouped: bool = True
    scale: Any = None


def _own_outputs(outputs: OutputPaths, config: ProcessConfig) -> list[Path]:
    """Everything this run writes, never to be taken for a slide when the report lies
    inside an input folder."""
    own = [outputs.report, outputs.zarr, outputs.log, outputs.previews, outputs.cells]
    own.append(lock_path_for(outputs.report))
    ledger = ledger_path(config, outputs)
    if ledger is not None:
        own += [ledger, results_dir_for(ledger), ledger_lock_path(ledger)]
        own += [ledger.with_name(ledger.name + suffix) for suffix in ("-wal", "-shm", "-journal")]
    return own


def _announced(
    fn: Callable[[SlideTask], SlideResult], starting: Callable[[SlideTask], None], task: SlideTask
) -> SlideResult:
    """``fn(task)``, after telling ``starting`` that the slide begins."""
    starting(task)
    return fn(task)


def process_batch(
    inputs: Sequence[Path],
    report: Path,
    config: ProcessConfig,
    *,
    on_result: Callable[[SlideResult], None] | None = None,
    progress: TileProgress | None = None,
    on_start: Callable[[list[SlideTask]], None] | None = None,
) -> BatchResult:
    """Process every slide found under ``inputs`` and write the report.

    Slides run concurrently on Dask (``config.batch``); a failing slide is
    recorded in the Errors sheet and the others go on.

    Args:
        inputs: Files and/or directories.
        report: ``OUT.xlsx``; masks go to ``OUT.zarr`` beside it.
        config: Run configuration.
        on_result: Called with each slide's result as it finishes.
        progress: Per-tile progress (local scheduler only).
        on_start: Called once with the list of slides found, before any runs.

    Raises:
        InputError: An input path does not exist.
        ConfigError: Invalid configuration (a bad ``--group-by`` pattern or
            manifest included) or unreachable scheduler.
    """
    started = datetime.now(UTC).astimezone()
    outputs = OutputPaths.for_report(report)
    sources = list_inputs(
        [Path(p) for p in inputs], config.batch.patterns, _own_outputs(outputs, config)
    )
    unlisted = [s.failure() for s in sources if s.problem]  # folders that could not be listed
    sources = [s for s in sources if not s.problem]
    keys = unique_keys([s.relative for s in sources], [s.path for s in sources])
    groups, grouped = assign_groups([s.relative for s in sources], config.review.group_by)
    tasks = [
        SlideTask(s.path, s.relative, k, g, m)
        for s, k, g, m in zip(sources, keys, groups, grouped, strict=True)
    ]
    if on_start is not None:
        on_start(tasks)
    outputs.report.parent.mkdir(parents=True, exist_ok=True)
    ledger = ledger_path(config, outputs)  # killed runs' leftovers go, even with nothing to do
    clear_leftovers(outputs, results_dir_for(ledger) if ledger is not None else None)
    previews = outputs.previews.resolve() if config.output.write_previews else None
    stop = StopRequest()  # SIGINT/SIGTERM: the slides in progress finish, the rest are skipped

    def run(
        todo: list[SlideTask],
        done: Callable[[SlideResult], None] | None,
        starting: Callable[[SlideTask], None],
    ) -> list[SlideResult]:
        if not todo:  # every slide done before: no model, no Zarr, no torch import
            return []
        from smearscan.pipeline import prepare_outputs, run_slide_safely

        todo = _with_scales(todo, config, batch_ledger, calibrations)
        prepare_outputs(outputs)
        distributed = bool(config.batch.scheduler)
        fn = partial(
            run_slide_safely,
            config=config,
            zarr_path=outputs.zarr.resolve(),
            progress=None if distributed else progress,
            previews_dir=previews,
        )
        if distributed:  # the workers start them: recorded as sent
            for task in todo:
                starting(task)
        return run_tasks(
            fn if distributed else partial(unless_stopped, partial(_announced, fn, starting), stop),
            todo,
            workers=config.batch.workers,
            scheduler=config.batch.scheduler,
            on_result=done,
            stop=stop,
        )

    batch_ledger = open_batch_ledger(config, outputs)
    calibrations: list[Any] = []  # the cameras calibrated for this run (the Run sheet)
    with stop.installed():  # until the report is written: a signal then lets it finish
        results, processed = run_with_ledger(
            batch_ledger, tasks, run, on_result, config.batch.since
        )
        results += unlisted
        stop.writing_report = True
        group_results = summarise_groups(results, config.review)
        finished = datetime.now(UTC).astimezone()
        info = run_info(config, inputs, outputs, started, finished, results, processed)
        info["camera_calibrations"] = "; ".join(c.summary() for c in calibrations)
        _write_report_and_page(outputs.report, results, info, group_results, previews)
    return BatchResult(results, outputs, info, group_results, processed, stop.signal_name)


def _with_scales(
    todo: list[SlideTask], config: ProcessConfig, ledger: Any, calibrations: list[Any]
) -> list[SlideTask]:
    """The tasks with their pixel-size decisions (:func:`smearscan.scale_plan.plan_scales`,
    the ledger's stored calibrations reused unless ``--force``); ``calibrations`` gets
    the cameras used."""
    from smearscan.scale_plan import plan_scales

    decisions, used = plan_scales(
        todo,
        config,
        ledger.ledger if ledger is not None else None,
        recalibrate=config.batch.force,
    )
    calibrations.extend(used)
    return [replace(t, scale=decisions.get(t.key)) for t in todo]


def _write_report_and_page(
    report: Path,
    results: list[SlideResult],
    info: dict[str, Any],
    groups: list[GroupResult],
    previews: Path | None,
) -> None:
    """The report, then the review page (when previews are on; its failure is only logged)."""
    write_report(report, results, info, groups)
    if previews is not None:
        try:
            write_review_page(results, previews)
        except OSError as exc:  # the report and masks are written; the page is a convenience
            log.error("review page not written in %s: %s", previews, exc)
