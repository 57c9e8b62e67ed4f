"""One run at a time per output: an advisory lock file beside the report.

``smearscan process --out OUT.xlsx`` holds ``OUT.lock`` (an exclusive
``flock``) for the whole run, so two runs writing the same report, Zarr store
and previews never interleave; a ledger given with ``--ledger`` (shared by
several outputs) is held the same way through ``LEDGER.lock``. The lock
belongs to the open file, so the kernel releases it when the process ends in
any way, SIGKILL included: there is never a stale lock to clean up by hand.
The file itself stays, holding the pid, host and start time of the last
holder (shown to a run that has to wait).

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
from datetime import UTC, datetime
from pathlib import Path

from smearscan.errors import SmearscanError

log = logging.getLogger(__name__)

#: Seconds between attempts while waiting.
POLL_S = 0.2


class LockedError(SmearscanError):
    """Another run holds the lock (the message names it and the lock file)."""


def lock_path_for(report: Path) -> Path:
    """The lock file of a run writing ``report``: ``OUT.xlsx`` -> ``OUT.lock``."""
    return Path(report).with_suffix(".lock")


class RunLock:
    """Exclusive lock on ``path``, held from :meth:`acquire` until :meth:`release`.

    Args:
        path: The lock file (created when missing, with its folder).
        wait_s: Seconds to wait for another holder to finish (0: do not wait).
    """

    def __init__(self, path: Path, wait_s: float = 0.0) -> None:
        if wait_s < 0:
            raise ValueError(f"wait must be >= 0 seconds, got {wait_s}")
        self.path = Path(path)
        self.wait_s = wait_s
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def acquire(self) -> RunLock:
        """Take the lock, waiting up to ``wait_s``.

        Raises:
            LockedError: Still held by another run after ``wait_s`` seconds.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
                        f"{self.path} is held by {holder}: another smearscan run writes the "
                        f"same output{waited}; use --wait SECONDS to wait for it"
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
