"""One run at a time per output and per ledger: advisory lock files beside them.

``smearscan process --out OUT.xlsx`` holds ``OUT.lock`` (an exclusive
``flock``) for the whole run, so two runs writing the same report, Zarr store
and previews never interleave; its ledger (the default ``OUT_ledger.sqlite``
or one given with ``--ledger``, maybe shared by several outputs) is held the
same way through its own ``LEDGER.lock`` (the ledger's whole name then
``.lock``: ``ledger.sqlite.lock``), so a run using another run's default ledger
as its ``--ledger`` waits for it too. Every lock name comes from the whole
file name it guards (``night.2026-12-04.xlsx`` -> ``night.2026-12-04.lock``),
so an output and a ledger never share a lock by accident; when they do share
one (``--out L.sqlite.xlsx --ledger L.sqlite``) it is taken once.
:func:`lock_run` takes them all before anything is written, or none.

A lock belongs to the open file, so the kernel releases it when the process
ends in any way, SIGKILL included: there is never a stale lock to clean up by
hand. The file itself stays, holding the pid, host and start time of the
last holder (shown to a run that has to wait).

A second run either waits for the lock (``--wait SECONDS``) or gives up at
once with :class:`LockedError`, which the CLI maps to exit code 3.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from smearscan.errors import SmearscanError
from smearscan.results import OutputPaths

if TYPE_CHECKING:
    from smearscan.config import ProcessConfig

log = logging.getLogger(__name__)

#: Seconds between attempts while waiting.
POLL_S = 0.2


class LockedError(SmearscanError):
    """Another run holds the lock (the message names it and the lock file)."""


#: What a run locked out of an output's lock is told the holder does.
OUTPUT_HOLDER = "writes the same output"


def lock_path_for(report: Path) -> Path:
    """The lock file of a run writing ``report``: ``OUT.xlsx`` -> ``OUT.lock``
    (``night.2026-12-04.xlsx`` -> ``night.2026-12-04.lock``)."""
    return OutputPaths.for_report(Path(report)).lock


def ledger_lock_path(ledger: Path) -> Path:
    """The lock file of a run ledger: its whole name then ``.lock``
    (``ledger.sqlite`` -> ``ledger.sqlite.lock``), never the lock of a report."""
    ledger = Path(ledger)
    return ledger.with_name(f"{ledger.name}.lock")


class RunLock:
    """Exclusive lock on ``path``, held from :meth:`acquire` until :meth:`release`.

    Args:
        path: The lock file (created when missing, with its folder).
        wait_s: Seconds to wait for another holder to finish (0: do not wait).
        held_for: What the holder does, for the message of a run locked out
            (e.g. ``"uses the ledger /data/ledger.sqlite"``).
    """

    def __init__(self, path: Path, wait_s: float = 0.0, held_for: str = OUTPUT_HOLDER) -> None:
        if wait_s < 0:
            raise ValueError(f"wait must be >= 0 seconds, got {wait_s}")
        self.path = Path(path)
        self.wait_s = wait_s
        self.held_for = held_for
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def acquire(self, deadline: float | None = None) -> RunLock:
        """Take the lock, waiting up to ``wait_s``.

        Args:
            deadline: ``time.monotonic()`` after which to give up instead (one
                ``--wait`` shared by several locks).

        Raises:
            LockedError: Still held by another run after ``wait_s`` seconds.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if deadline is None:
            deadline = time.monotonic() + self.wait_s
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder()
                    os.close(fd)
                    waited = f" after waiting {self.wait_s:g} s" if self.wait_s else ""
                    raise LockedError(
                        f"{self.path} is held by {holder}: another smearscan run "
                        f"{self.held_for}{waited}; use --wait SECONDS to wait for it"
                    ) from None
                if not announced:
                    log.warning("waiting for %s (held by %s)", self.path, self._holder())
                    announced = True
                time.sleep(POLL_S)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the lock go (the file stays, with the last holder's record)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class RunLocks:
    """Several :class:`RunLock` taken together: all of them, in one order, or none.

    Each lock file is taken once (an output and a ledger may share one), in
    the order of their paths (two runs that wait for each other's locks never
    deadlock), within one ``wait_s`` for all.

    Args:
        locks: ``(lock file, what its holder does)`` pairs.
        wait_s: Seconds to wait for the other holders, in all (0: do not wait).
    """

    def __init__(self, locks: Sequence[tuple[Path, str]], wait_s: float = 0.0) -> None:
        if wait_s < 0:
            raise ValueError(f"wait must be >= 0 seconds, got {wait_s}")
        held_for: dict[str, tuple[Path, list[str]]] = {}  # real path: (as given, uses)
        for path, what in locks:
            uses = held_for.setdefault(os.path.realpath(path), (Path(path), []))[1]
            if what not in uses:
                uses.append(what)
        self.wait_s = wait_s
        self.locks = [
            RunLock(path, wait_s, " and ".join(uses))
            for _, (path, uses) in sorted(held_for.items())
        ]

    def acquire(self) -> RunLocks:
        """Take every lock, or none.

        Raises:
            LockedError: One of them is still held by another run after ``wait_s``
                seconds (the message names it and what its holder does).
        """
        deadline = time.monotonic() + self.wait_s
        taken: list[RunLock] = []
        try:
            for lock in self.locks:
                taken.append(lock.acquire(deadline))
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise
        return self

    def release(self) -> None:
        """Let every lock go."""
        for lock in reversed(self.locks):
            lock.release()

    def __enter__(self) -> RunLocks:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def run_locks(report: Path, ledger: Path | None, wait_s: float = 0.0) -> RunLocks:
    """The locks of a run writing ``report`` with ``ledger`` (None: no ledger), not taken.

    ``OUT.lock`` for the outputs, ``LEDGER.lock`` (:func:`ledger_lock_path`) for the
    ledger, whether it is the default one beside the report or given with ``--ledger``.
    """
    locks = [(lock_path_for(report), OUTPUT_HOLDER)]
    if ledger is not None:
        locks.append((ledger_lock_path(ledger), f"uses the ledger {ledger}"))
    return RunLocks(locks, wait_s)


def lock_run(report: Path, config: ProcessConfig, wait_s: float = 0.0) -> RunLocks:
    """Take every lock of a run writing ``report`` with ``config`` (:func:`run_locks`).

    Call it before the run writes anything (its log included): a run locked out
    then leaves no trace.

    Raises:
        LockedError: Another run holds one of them after ``wait_s`` seconds.
    """
    from smearscan.batch_ledger import ledger_path

    return run_locks(report, ledger_path(config, OutputPaths.for_report(report)), wait_s).acquire()
