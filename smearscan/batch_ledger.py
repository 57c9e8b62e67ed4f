"""A batch with a run ledger (``process --ledger PATH``): only new or changed slides run.

Before the slides run, each one's content fingerprint (size, mtime, sha256;
:meth:`smearscan.ledger.Ledger.file_identity`) and the run's model and
classifier sha256 and parameters hash are looked up in the ledger
(:meth:`~smearscan.ledger.Ledger.should_process`):

* ``done`` (processed before with the same content, models and parameters):
  not run again; its stored result (``LEDGER_results/<slide_id>.json``,
  written when it finished) goes into the report as it was;
* ``failed`` before: not run again unless ``--retry-failed`` (the report shows
  it ``skipped`` with the earlier error);
* new, changed, interrupted (left ``running`` by a killed run), or ``--force``:
  run, recorded ``running`` before and ``ok``/``failed`` after, one transaction
  each, so a run killed at any moment leaves the ledger consistent and the
  next run redoes exactly the slides it did not finish.

The parameters hash covers every setting that changes what a slide yields
(model, tiling, inference, scale, cells, classify, review), not where or how
fast it runs (batch, output).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from smearscan import __version__
from smearscan.atomic import atomic_write
from smearscan.config import ProcessConfig
from smearscan.errors import (
    ConfigError,
    CorruptImageError,
    FingerprintTimeoutError,
    ImageTooLargeError,
    SmearscanError,
    UnsupportedFormatError,
)
from smearscan.failure_kinds import disk_full_at, is_disk_full, is_transient
from smearscan.fingerprint import FileIdentity, head_identity, params_hash
from smearscan.image_header import check_header
from smearscan.ledger import (
    INTERRUPTED_REASON,
    Ledger,
    LedgerCorruptError,
    LedgerError,
    LedgerRow,
)
from smearscan.ledger_outcomes import EarlierTask, earlier_problem, fail_unstored, redo_tasks
from smearscan.limits import deadline
from smearscan.results import OutputPaths, SlideResult
from smearscan.since import parse_since

log = logging.getLogger(__name__)

#: Config sections that do not change a slide's result.
_NOT_HASHED = ("batch", "output")
#: Errors-sheet stage of a slide not run again that has no stage of its own.
_NOT_RUN_STAGES = {INTERRUPTED_REASON: "interrupted", "in progress": "in progress"}


def results_dir_for(ledger: Path) -> Path:
    """Where a ledger's stored slide results go: ``LEDGER_results/`` beside it."""
    return ledger.with_name(f"{ledger.stem}_results")


def result_params(config: ProcessConfig) -> dict[str, Any]:
    """The settings a slide's result depends on (hashed into the ledger key).

    The smearscan version is one of them: after an upgrade every slide runs again.
    """
    values = config.to_dict()
    return {"version": __version__} | {k: v for k, v in values.items() if k not in _NOT_HASHED}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class BatchLedger:
    """The ledger side of one batch run.

    Args:
        path: The SQLite ledger file (created when missing).
        config: The run configuration.
        force: Run every slide again.
        retry_failed: Run slides that failed before again.
    """

    def __init__(self, path: Path, config: ProcessConfig, *, force: bool, retry_failed: bool):
        from smearscan.provenance import classifier_sha256, model_sha256_or_note

        self.path = Path(path)
        self.force, self.retry_failed = force, retry_failed
        self.results_dir = results_dir_for(self.path)
        self.model_sha = model_sha256_or_note(config.model)
        self.classifier_sha = classifier_sha256(config.classify.classifier)
        self.params = params_hash(result_params(config))
        #: Why the ledger cannot be written (its disk is full): it is read, not written,
        #: and every slide that would run fails unrun (stage ``ledger``).
        self.unwritable: LedgerError | None = None
        self.ledger, self.run_id = self._open({"params_hash": self.params, **result_params(config)})
        self._ids: dict[str, int] = {}
        self.max_pixels = config.batch.max_pixels
        self.hash_limit_s = config.batch.slide_timeout_s  # hashing is part of a slide's time
        #: Keys of the slides failed unrun because hashing them took longer than that.
        self.refused: set[str] = set()
        #: Keys of the slides this run failed because the ledger could not queue them.
        self.unqueued: set[str] = set()

    def plan(self, tasks: Sequence[Any]) -> tuple[list[Any], dict[str, SlideResult]]:
        """Split the batch: ``(tasks to run, {task key: stored result})``."""
        todo: list[Any] = []
        kept: dict[str, SlideResult] = {}
        for task in tasks:
            try:
                identity = self._identity(task)
            except FingerprintTimeoutError as exc:  # too large to hash in a slide's time
                kept[task.key] = self._refused(task, exc)
                continue
            except SmearscanError:  # unreadable, vanished...: the slide run records why
                todo.append(task)
                continue
            key = (identity, self.model_sha, self.classifier_sha, self.params)
            run, reason = self.ledger.should_process(
                *key, force=self.force, retry_failed=self.retry_failed
            )
            stored = None if run else self._stored(task, reason, *key)
            if stored is not None:
                kept[task.key] = stored
                continue
            try:
                if self.unwritable is not None:
                    raise self.unwritable
                self._ids[task.key] = self.ledger.queue(
                    *key, run_id=self.run_id, name=task.relative
                )
            except LedgerError as exc:  # a full disk, say: this slide fails, the others go on
                kept[task.key] = self._unqueued(task, exc)
                self.unqueued.add(task.key)
                continue
            todo.append(task)
        log.info(
            "ledger %s: %d slide(s) to process, %d already done or skipped",
            self.path,
            len(todo),
            len(kept),
        )
        return todo, kept

    def _identity(self, task: Any) -> FileIdentity:
        """The slide's fingerprint. Its header is checked first (:func:`check_header`): a
        file with an invalid header, over the pixel limit or far larger than its image is
        never hashed whole (:func:`head_identity`; its run fails at ``read`` and is
        recorded); hashing any other file stops at ``--slide-timeout``."""
        try:
            check_header(Path(task.path).absolute(), self.max_pixels)
        except (CorruptImageError, UnsupportedFormatError, ImageTooLargeError) as exc:
            log.info("%s: refused before hashing: %s", task.relative, exc.reason)
            return head_identity(task.path)
        with deadline(self.hash_limit_s):
            return self.ledger.file_identity(task.path)

    def _refused(self, task: Any, exc: FingerprintTimeoutError) -> SlideResult:
        """The failed result of a slide not hashed in time (not run, not in the ledger)."""
        log.error("%s: %s", task.relative, exc.reason)
        self.refused.add(task.key)
        return SlideResult(
            slide=task.relative,
            path=str(task.path),
            status="failed",
            error_stage="timeout",
            error=exc.reason,
            group=getattr(task, "group", ""),
        )

    def _stored(self, task: Any, reason: str, *key: Any) -> SlideResult | None:
        """The stored result of a slide not run again (None: run it after all)."""
        row = self.ledger.find(*key)
        if row is None:
            return None
        if reason != "done":  # failed before (no --retry-failed), or running elsewhere
            earlier = f"; earlier: {row.error_stage}: {row.error}" if row.error else ""
            return SlideResult(
                slide=task.relative,
                path=str(task.path),
                status="skipped",
                error_stage=row.error_stage or _NOT_RUN_STAGES.get(reason, "not run"),
                error=f"not run again ({reason}){earlier}",
                group=getattr(task, "group", ""),
            )
        result = self._load(row.slide_id, task.relative)
        if result is None:
            return None
        result.slide, result.group = task.relative, getattr(task, "group", result.group)
        return result

    def _load(self, slide_id: int, name: str, *, quiet: bool = False) -> SlideResult | None:
        """The stored result of ledger row ``slide_id`` (None: unusable, or its masks are
        gone: logged as a warning, unless ``quiet``, since the slide is processed again)."""
        file = self.results_dir / f"{slide_id}.json"
        say = log.debug if quiet else log.warning
        try:
            result = SlideResult(**json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            say("%s: stored result %s unusable (%s); processing again", name, file, exc)
            return None
        if result.mask_path and not Path(result.mask_path).is_dir():
            say("%s: its masks %s are gone; processing again", name, result.mask_path)
            return None
        return result

    def earlier_results(
        self, since: datetime | None, exclude: set[str]
    ) -> tuple[list[SlideResult], list[LedgerRow]]:
        """The slides the ledger records at or after ``since`` (None: ever), for ``--since``.

        Only each path's latest row counts: ``ok`` gives its stored result;
        every other row a result that is not ok, with its reason (failed, failed
        for a passing cause, interrupted, not run), so the report's Errors sheet
        shows it. Paths in ``exclude`` (the slides this run processes, already
        in the report) are left out.

        Returns:
            ``(results ordered by slide name, ok rows whose stored result or masks
            are gone)``: the caller processes those again.
        """
        found, redo = [], []
        interrupted = {row.slide_id for row in self.ledger.interrupted_slides()}
        for row in self.ledger.slides(since, latest_per_path=True):
            if row.path in exclude:
                continue
            if row.status != "ok":
                found.append(earlier_problem(row, row.slide_id in interrupted))
            elif (result := self._load(row.slide_id, row.name, quiet=True)) is not None:
                found.append(result)
            else:  # planned again by the caller, which then says why
                redo.append(row)
        return sorted(found, key=lambda r: (r.slide, r.path)), redo

    def started(self, task: Any) -> None:
        """Record that ``task`` starts now (``running``; a kill from now on counts as an
        attempt). Never raises: a ledger that cannot be written is logged, the slide runs."""
        slide_id = self._ids.get(task.key)
        if slide_id is None:
            return
        try:
            self.ledger.start(slide_id)
        except (SmearscanError, sqlite3.Error) as exc:
            log.error("ledger %s: cannot record that %s started: %s", self.path, task, exc)

    def _open(self, params: dict[str, Any]) -> tuple[Ledger, int]:
        """The ledger opened and this run recorded: ``(ledger, run id)``.

        On a full disk (it cannot even be opened for writing), the ledger as its
        file holds it, read-only (:meth:`Ledger.open_snapshot`), with run id 0 and
        :attr:`unwritable` set: the slides done before are reported as usual.

        Raises:
            LedgerError: The ledger cannot be used for any other reason.
        """
        ledger = None
        try:
            ledger = Ledger.open(self.path)
            return ledger, ledger.start_run(params)
        except LedgerError as exc:
            if ledger is not None:
                ledger.close()
            full = is_disk_full(exc) or disk_full_at(self.path.parent)
            if isinstance(exc, LedgerCorruptError) or not full:
                raise
            log.error(
                "ledger %s cannot be written, its disk is full (%s): the slides to process "
                "are not run (stage ledger); free space there and run again",
                self.path,
                exc,
            )
            self.unwritable = exc
            return Ledger.open_snapshot(self.path), 0

    def _unqueued(self, task: Any, exc: Exception) -> SlideResult:
        """The failed result of a slide the ledger could not record before it ran (not run)."""
        log.error("ledger %s: cannot record %s, not run: %s", self.path, task.relative, exc)
        full = is_disk_full(exc) or self.unwritable is not None
        advice = f"; its disk is full: free space in {self.path.parent} and run again" * full
        return SlideResult(
            slide=task.relative,
            path=str(task.path),
            status="failed",
            error_stage="ledger",
            error=f"not run: the ledger {self.path} could not record it ({exc}){advice}",
            group=getattr(task, "group", ""),
        )

    def finished(self, key: str, result: SlideResult) -> None:
        """Record one processed slide: ``ok`` with its stored result, ``failed``, or for a
        passing cause (:mod:`smearscan.failure_kinds`) to be run again by the next run.

        Never raises: a slide whose outcome cannot be recorded (a full disk) is
        failed in ``result`` itself (stage ``ledger``, its masks removed), the
        batch goes on, and the next run processes it again.
        """
        slide_id = self._ids.get(key)
        if slide_id is None:
            return
        try:
            self._record(slide_id, result)
        except (OSError, LedgerError) as exc:
            log.error("ledger %s: cannot record %s: %s", self.path, result.slide, exc)
            if result.status == "ok":
                where = self.path if isinstance(exc, LedgerError) else self.results_dir
                fail_unstored(result, f"the ledger {where}", exc)
            if result.status == "failed":
                self._record_retry(slide_id, result)

    def _record_retry(self, slide_id: int, result: SlideResult) -> None:
        """Leave slide row ``slide_id`` to the next run after a failure to record it."""
        try:
            self.ledger.mark_retry(slide_id, result.error_stage, result.error, seconds=0.0)
        except LedgerError as exc:  # still "running": the next run sees it interrupted
            log.error(
                "ledger %s: %s left 'running' (%s); the next run processes it again",
                self.path,
                result.slide,
                exc,
            )

    def _record(self, slide_id: int, result: SlideResult) -> None:
        """Record one slide's outcome (see :meth:`finished`); raises what the writes raise."""
        if result.status == "skipped":  # not started (the batch was stopped): redo next time
            self.ledger.mark_skipped(slide_id, result.error)
            return
        if result.status == "ok":
            self.results_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(dataclasses.asdict(result), default=_plain)
            atomic_write(
                self.results_dir / f"{slide_id}.json",
                lambda tmp: tmp.write_text(text, encoding="utf-8"),
            )
            self.ledger.mark_done(
                slide_id,
                zarr_path=result.mask_path,
                preview_path=result.preview_path,
                seconds=result.seconds,
            )
        elif is_transient(result.error_stage, result.error):
            log.warning(
                "%s: failed for a passing cause (%s); the next run tries it again",
                result.slide,
                result.error,
            )
            self.ledger.mark_retry(
                slide_id, result.error_stage or "process", result.error, seconds=result.seconds
            )
        else:
            self.ledger.mark_failed(
                slide_id, result.error_stage or "process", result.error, seconds=result.seconds
            )

    def close(self, interrupted: bool = False) -> None:
        """Finish the run record and close the ledger. A run record that cannot be
        written (a full disk) is logged: the next run finds it stale and closes it."""
        if self.unwritable is not None:  # a read-only snapshot: nothing was recorded
            self.ledger.close()
            return
        try:
            self.ledger.finish_run(self.run_id, "interrupted" if interrupted else "finished")
        except LedgerError as exc:
            log.error("ledger %s: cannot record the end of run %d: %s", self.path, self.run_id, exc)
        self.ledger.close()


def ledger_path(config: ProcessConfig, outputs: OutputPaths) -> Path | None:
    """The batch's ledger file: ``batch.ledger``, else ``OUT_ledger.sqlite``; None: no ledger."""
    if not config.batch.use_ledger:
        return None
    return Path(config.batch.ledger) if config.batch.ledger else outputs.ledger


def open_batch_ledger(config: ProcessConfig, outputs: OutputPaths) -> BatchLedger | None:
    """The batch's ledger (see :func:`ledger_path`), opened, or None without one."""
    path = ledger_path(config, outputs)
    if path is None:
        if config.batch.since is not None:
            raise ConfigError("--since needs the run ledger (it was turned off: --no-ledger)")
        return None
    batch = config.batch
    return BatchLedger(path, config, force=batch.force, retry_failed=batch.retry_failed)


#: ``run(tasks, on_result, on_start) -> results``: the executor of a batch; it calls
#: ``on_start(task)`` as each slide begins and ``on_result(result)`` as it ends.
Runner = Callable[
    [list[Any], Callable[[SlideResult], None] | None, Callable[[Any], None]], list[SlideResult]
]


def run_with_ledger(
    ledger: BatchLedger | None,
    tasks: Sequence[Any],
    run: Runner,
    on_result: Callable[[SlideResult], None] | None,
    since: str | None = None,
) -> tuple[list[SlideResult], int]:
    """Run the tasks (those the ledger says need it); results in task order.

    Args:
        ledger: The batch's ledger, or None to run every task.
        tasks: Every slide of the batch.
        run: The executor (:data:`Runner`).
        on_result: The caller's per-slide callback.
        since: ``--since`` (:mod:`smearscan.since`): the report covers the
            slides this run processed, then every other slide the ledger records
            done or failed since then (whatever the inputs; input slides done
            before then are left out), ordered by name.

    Returns:
        ``(results of every task, or with ``since`` of the tasks run and the
        earlier slides; number of slides processed)``.
    """
    if ledger is None:
        return run(list(tasks), on_result, lambda _task: None), len(tasks)
    start = parse_since(since) if since is not None else None  # from the batch's start
    todo, kept = ledger.plan(tasks)
    earlier: list[SlideResult] = []
    extra: list[EarlierTask] = []
    if since is not None:
        paths = {os.path.abspath(t.path) for t in todo}  # as the ledger keys them
        earlier, redo = ledger.earlier_results(start, paths)
        extra = redo_tasks(redo, tasks)
        more, kept_more = ledger.plan(extra)  # their masks are gone: processed again
        todo, kept = todo + more, kept | kept_more
    by_name = {t.relative: t.key for t in todo}

    def record(result: SlideResult) -> None:
        ledger.finished(by_name.get(result.slide, ""), result)
        if on_result is not None:
            on_result(result)

    interrupted = True
    try:
        new = iter(run(todo, record, ledger.started))
        interrupted = False
        every = [kept[t.key] if t.key in kept else next(new) for t in [*tasks, *extra]]
        results = every[: len(tasks)]
        if since is not None:
            ran = {t.key for t in todo} | ledger.unqueued | ledger.refused
            results = [r for t, r in zip(tasks, results, strict=True) if t.key in ran]
            results += sorted(earlier + every[len(tasks) :], key=lambda r: (r.slide, r.path))
    finally:
        ledger.close(interrupted)
    return results, len(todo)
