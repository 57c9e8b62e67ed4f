"""Terminal output for the CLI: logging handlers and progress display.

Only the CLI configures output (library modules just log). On a terminal the
console gets rich log lines and progress bars; under cron (no TTY) or with
``--quiet`` it gets plain lines, one per finished slide. Every run also logs
at INFO (DEBUG with ``--verbose``) to a file beside the report.

With ``--log-format json`` the log file and the console carry one JSON object
per line (:class:`JsonFormatter`) for log collectors, and the console is never
rich (no progress bars).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from smearscan.results import SlideResult

#: Exit code of a usage, configuration or dataset error (nothing was done).
EXIT_USAGE = 2

_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_PLAIN_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Time stamps of the rich console: ISO 8601 like the plain lines and the log file
#: (rich's default, ``[%x %X]``, is MM/DD/YY in the C locale).
RICH_TIME_FORMAT = f"[{_PLAIN_TIME_FORMAT}]"

#: Record attributes (set with ``logger.info(..., extra={...})``) copied into JSON lines.
JSON_EXTRA_FIELDS = ("slide", "stage", "status")


class LogFormat(StrEnum):
    """How log lines are written: ``text`` for people, ``json`` for log collectors."""

    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (stdlib :mod:`json` only).

    Keys: ``ts`` (UTC, ISO 8601 with milliseconds and ``Z``), ``level``,
    ``logger``, ``message`` (arguments merged in); then ``slide``, ``stage`` and
    ``status`` when the record carries them (``extra=``), and ``exc`` (the
    formatted traceback) when it has exception info. Values JSON cannot encode
    are written with ``str``; non-ASCII text is kept as is (UTF-8).
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single-line JSON object."""
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, object] = {
            "ts": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JSON_EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != "":
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


#: The ``--log-format`` option shared by the commands that log.
LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        case_sensitive=False,
        help="text, or json: one JSON object per line (ts, level, logger, message, "
        "slide, stage, status, exc) in the log file and on the console, for log "
        "collectors; json turns the progress bars off.",
    ),
]


def fail_usage(message: str) -> NoReturn:
    """Print ``error: message`` in red on stderr and exit with :data:`EXIT_USAGE`."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_USAGE)


def is_interactive() -> bool:
    """True when stderr is a terminal (progress bars make sense)."""
    return sys.stderr.isatty()


def setup_logging(
    log_file: Path | None,
    *,
    quiet: bool,
    verbose: bool,
    rich: bool,
    log_format: LogFormat | str = LogFormat.TEXT,
) -> Console:
    """Configure the ``smearscan`` logger: console handler plus optional log file.

    Args:
        log_file: Also log here (INFO, DEBUG with ``verbose``); None for none.
        quiet: Console shows warnings and errors only.
        verbose: DEBUG on the console and in the file.
        rich: Rich console lines (share the returned console with progress bars);
            ignored with ``log_format="json"``.
        log_format: ``text`` or ``json`` (one JSON object per line, console and file).

    Returns:
        The console that progress bars must share with the log handler.

    Raises:
        ValueError: ``log_format`` is neither ``text`` nor ``json``.
    """
    fmt = LogFormat(log_format)
    rich = rich and fmt is LogFormat.TEXT
    console = Console(stderr=True)
    logger = logging.getLogger("smearscan")
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler: logging.Handler
    if rich:
        handler = RichHandler(
            console=console, show_path=False, markup=False, log_time_format=RICH_TIME_FORMAT
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter()
            if fmt is LogFormat.JSON
            else logging.Formatter(_PLAIN_FORMAT, _PLAIN_TIME_FORMAT)
        )
    handler.setLevel(level)
    logger.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(
            JsonFormatter() if fmt is LogFormat.JSON else logging.Formatter(_FILE_FORMAT)
        )
        file_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.addHandler(file_handler)
    return console


class BatchProgress:
    """Slide-level progress: a rich display on a terminal, plain log lines otherwise.

    Thread-safe: slides report from Dask worker threads.
    """

    def __init__(self, console: Console, *, rich: bool) -> None:
        self._rich = rich
        self._lock = threading.Lock()
        self._log = logging.getLogger("smearscan.progress")
        self._done = 0
        self._total = 0
        self._tiles: dict[str, TaskID] = {}
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        if rich:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )

    def __enter__(self) -> BatchProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, n_slides: int) -> None:
        """Announce the number of slides found."""
        self._total = n_slides
        self._log.info("%d slide(s) to process", n_slides)
        if self._progress is not None:
            self._overall = self._progress.add_task("slides", total=n_slides)

    def tiles(self, slide: str, done: int, total: int) -> None:
        """Per-tile progress of one slide (rich display only)."""
        if self._progress is None:
            return
        with self._lock:
            task = self._tiles.get(slide)
            if task is None:
                task = self._progress.add_task(f"  {slide[-40:]}", total=total)
                self._tiles[slide] = task
            self._progress.update(task, completed=done)

    def slide_done(self, result: SlideResult) -> None:
        """One slide finished: an INFO line if ok or skipped (with the reason), an ERROR
        if it failed (the run's only line about the failure: the pipeline logs none).

        The record carries ``slide``, ``status`` and (failed) ``stage`` as extras.
        """
        with self._lock:
            self._done += 1
            if self._progress is not None:
                task = self._tiles.pop(result.slide, None)
                if task is not None:
                    self._progress.remove_task(task)
                if self._overall is not None:
                    self._progress.advance(self._overall)
            failed = result.status == "failed"
            if result.status == "ok":
                what = "ok"
            elif result.status == "skipped":  # e.g. not run: the batch was stopped by SIGTERM
                what = f"skipped ({result.error})" if result.error else "skipped"
            else:
                what = f"FAILED ({result.error_stage}: {result.error})"
            self._log.log(
                logging.ERROR if failed else logging.INFO,
                "[%d/%d] %s %s (%.1f s)",
                self._done,
                self._total,
                result.slide,
                what,
                result.seconds,
                extra={
                    "slide": result.slide,
                    "stage": result.error_stage if failed else None,
                    "status": result.status,
                },
            )
