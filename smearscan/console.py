"""Terminal output for the CLI: logging handlers and progress display.

Only the CLI configures output (library modules just log). On a terminal the
console gets rich log lines and progress bars; under cron (no TTY) or with
``--quiet`` it gets plain lines, one per finished slide. Every run also logs
at INFO (DEBUG with ``--verbose``) to a file beside the report.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import NoReturn

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


def fail_usage(message: str) -> NoReturn:
    """Print ``error: message`` in red on stderr and exit with :data:`EXIT_USAGE`."""
    import typer

    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_USAGE)


def is_interactive() -> bool:
    """True when stderr is a terminal (progress bars make sense)."""
    return sys.stderr.isatty()


def setup_logging(log_file: Path | None, *, quiet: bool, verbose: bool, rich: bool) -> Console:
    """Configure the ``smearscan`` logger: console handler plus optional log file.

    Returns:
        The console that progress bars must share with the log handler.
    """
    console = Console(stderr=True)
    logger = logging.getLogger("smearscan")
    logger.handlers.clear()
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler: logging.Handler
    if rich:
        handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_PLAIN_FORMAT, "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(level)
    logger.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(_FILE_FORMAT))
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
        """One slide finished (ok or failed)."""
        with self._lock:
            self._done += 1
            if self._progress is not None:
                task = self._tiles.pop(result.slide, None)
                if task is not None:
                    self._progress.remove_task(task)
                if self._overall is not None:
                    self._progress.advance(self._overall)
            what = (
                "ok" if result.status == "ok" else f"FAILED ({result.error_stage}: {result.error})"
            )
            self._log.info(
                "[%d/%d] %s %s (%.1f s)",
                self._done,
                self._total,
                result.slide,
                what,
                result.seconds,
            )
