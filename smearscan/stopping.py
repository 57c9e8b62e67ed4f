"""Stopping a batch cleanly on SIGINT or SIGTERM: the slides in progress finish.

While :meth:`StopRequest.installed` is active (in the main thread), the first
SIGINT or SIGTERM sets the request instead of killing the process: slides
already running finish and are recorded, slides not yet started come back as
``skipped`` ("not run: the batch was stopped by SIGTERM"), and the report is
written as usual. :func:`smearscan.batch.process_batch` keeps the handler
installed until the report and the review page are written, so a signal that
arrives while they are written lets them finish too (the run still counts as
stopped). A second signal aborts at once (the default action), for an operator
who will not wait; the temporary files being written then are removed first
(:func:`smearscan.atomic.remove_temps_in_progress`), so none is left behind.

With a run ledger the skipped slides are recorded as such, so the next run
processes them.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from smearscan.atomic import remove_temps_in_progress
from smearscan.results import SlideResult

log = logging.getLogger(__name__)

#: Signals that ask for a clean stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether the batch was asked to stop, and by which signal."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""
        #: Set once every slide is done and the report is being written (the log says so).
        self.writing_report = False

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.event.is_set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():  # the second signal: stop waiting
            log.error("%s again: aborting now", name)
            remove_temps_in_progress()
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.signal_name = name
        self.event.set()
        if self.writing_report:
            log.warning("%s: stopping once the report is written (send it again to abort)", name)
            return
        log.warning(
            "%s: stopping after the slides in progress; the others are skipped "
            "(send it again to abort at once)",
            name,
        )

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle SIGINT/SIGTERM for the duration (no-op outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def skipped(self, task: Any) -> SlideResult:
        """The result of a slide not started because of the stop."""
        return SlideResult(
            slide=task.relative,
            path=str(task.path),
            status="skipped",
            error=f"not run: the batch was stopped by {self.signal_name or 'a signal'}",
            group=getattr(task, "group", ""),
        )


def unless_stopped(fn: Callable[[Any], SlideResult], stop: StopRequest, task: Any) -> SlideResult:
    """``fn(task)``, or a skipped result when the batch was asked to stop first."""
    if stop.requested:
        return stop.skipped(task)
    return fn(task)
