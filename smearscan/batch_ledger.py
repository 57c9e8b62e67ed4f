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
from smearscan.errors import ConfigError, SmearscanError
from smearscan.fingerprint import params_hash
from smearscan.ledger import Ledger
from smearscan.results import OutputPaths, SlideResult
from smearscan.since import parse_since

log = logging.getLogger(__name__)

#: Config sections that do not change a slide's result.
_NOT_HASHED = ("batch", "output")


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
        self.ledger = Ledger.open(self.path)
        self.run_id = self.ledger.start_run({"params_hash": self.params, **result_params(config)})
        self._ids: dict[str, int] = {}

    def plan(self, tasks: Sequence[Any]) -> tuple[list[Any], dict[str, SlideResult]]:
        """Split the batch: ``(tasks to run, {task key: stored result})``."""
        todo: list[Any] = []
        kept: dict[str, SlideResult] = {}
        for task in tasks:
            try:
                identity = self.ledger.file_identity(task.path)
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
            self._ids[task.key] = self.ledger.queue(*key, run_id=self.run_id, name=task.relative)
            todo.append(task)
        log.info(
            "ledger %s: %d slide(s) to process, %d already done or skipped",
            self.path,
            len(todo),
            len(kept),
        )
        return todo, kept

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
                error_stage=row.error_stage,
                error=f"not run again ({reason}){earlier}",
                group=getattr(task, "group", ""),
            )
        result = self._load(row.slide_id, task.relative)
        if result is None:
            return None
        result.slide, result.group = task.relative, getattr(task, "group", result.group)
        return result

    def _load(self, slide_id: int, name: str) -> SlideResult | None:
        """The stored result of ledger row ``slide_id`` (None: unusable, or its masks are gone)."""
        file = self.results_dir / f"{slide_id}.json"
        try:
            result = SlideResult(**json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s: stored result %s unusable (%s); processing again", name, file, exc)
            return None
        if result.mask_path and not Path(result.mask_path).is_dir():
            log.warning("%s: its masks %s are gone; processing again", name, result.mask_path)
            return None
        return result

    def earlier_results(self, since: datetime | None, exclude: set[str]) -> list[SlideResult]:
        """The slides the ledger records done or failed at or after ``since`` (None: ever).

        Only each path's latest row counts: ``ok`` gives its stored result,
        ``failed`` a failed result with the recorded stage and error. Paths in
        ``exclude`` (the slides this run processed, already in the report) are
        left out. Ordered by slide name.
        """
        found = []
        for row in self.ledger.slides(since, latest_per_path=True):
            if row.path in exclude or row.status not in ("ok", "failed"):
                continue
            if row.status == "failed":
                found.append(
                    SlideResult(
                        slide=row.name,
                        path=row.path,
                        status="failed",
                        error_stage=row.error_stage,
                        error=row.error,
                        seconds=row.seconds or 0.0,
                        group=row.name,
                    )
                )
            elif (result := self._load(row.slide_id, row.name)) is not None:
                found.append(result)
        return sorted(found, key=lambda r: (r.slide, r.path))

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

    def finished(self, key: str, result: SlideResult) -> None:
        """Record one processed slide (``ok`` with its stored result, or ``failed``)."""
        slide_id = self._ids.get(key)
        if slide_id is None:
            return
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
        else:
            self.ledger.mark_failed(
                slide_id, result.error_stage or "process", result.error, seconds=result.seconds
            )

    def close(self, interrupted: bool = False) -> None:
        """Finish the run record and close the ledger."""
        self.ledger.finish_run(self.run_id, "interrupted" if interrupted else "finished")
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
    by_name = {t.relative: t.key for t in todo}

    def record(result: SlideResult) -> None:
        ledger.finished(by_name.get(result.slide, ""), result)
        if on_result is not None:
            on_result(result)

    interrupted = True
    try:
        new = iter(run(todo, record, ledger.started))
        interrupted = False
        results = [kept[t.key] if t.key in kept else next(new) for t in tasks]
        if since is not None:
            ran = {t.key for t in todo}
            results = [r for t, r in zip(tasks, results, strict=True) if t.key in ran]
            paths = {os.path.abspath(t.path) for t in todo}  # as the ledger keys them
            results += ledger.earlier_results(start, paths)
    finally:
        ledger.close(interrupted)
    return results, len(todo)
