"""Which slide failures pass by themselves, so that the next run simply tries again.

A slide fails for a reason in its file (truncated, not an image, too large),
in the settings (``--slide-timeout``, ``--max-memory``) or in the machine at
that moment: the disk was full, the file vanished or was being replaced
while the batch read it, an I/O error on a network share. The ledger holds
the first two kinds as ``failed`` until ``--retry-failed`` (trying them again
every night gives the same answer); the last kind is *transient*: recorded so
that the next run processes the slide again on its own.

The kind is read off the failure's message, which smearscan writes itself
(:func:`smearscan.pipeline.stage` keeps ``OSError: [Errno 28] ...``;
:mod:`smearscan.input_checks` says ``file not found``): a failed
:class:`~smearscan.results.SlideResult` carries no exception object, and the
message is what the ledger and the report keep.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

#: ``errno`` values of a machine's passing trouble: full disk or quota, I/O error,
#: a file gone (deleted or replaced during the run), a stale NFS handle, no memory
#: for a buffer, a busy resource, a timed-out network file system.
TRANSIENT_ERRNOS: frozenset[int] = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.ENOENT,
        errno.ESTALE,
        errno.EAGAIN,
        errno.EBUSY,
        errno.ETIMEDOUT,
        errno.ENOMEM,
    }
)

#: Stages whose failures are limits the operator set: held until ``--retry-failed``.
LIMIT_STAGES: frozenset[str] = frozenset({"timeout", "memory"})

_ERRNO = re.compile(r"\[Errno (\d+)\]")
#: How the same conditions read where no errno is quoted (SQLite, smearscan's own words).
_PHRASES = (
    "no space left on device",
    "disk quota exceeded",
    "input/output error",
    "database or disk is full",
    "disk i/o error",
    "file not found",
    "no such file or directory",
)


def is_transient(stage: str, message: str) -> bool:
    """Whether a slide failure is of a passing kind (see the module docstring).

    Args:
        stage: The stage that failed (``read``, ``write``, ``timeout``...).
        message: The failure's message as reported.

    Returns:
        True for a full disk, an I/O error or a vanished file; False for
        everything else, the limits (stages ``timeout`` and ``memory``) included.
    """
    if stage in LIMIT_STAGES:
        return False
    if any(int(code) in TRANSIENT_ERRNOS for code in _ERRNO.findall(message)):
        return True
    text = message.lower()
    return any(phrase in text for phrase in _PHRASES)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a full disk or quota."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current).lower()
        if "no space left on device" in text or "database or disk is full" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


#: Free space (bytes) under which a folder's file system counts as full: an SQLite
#: write needs a few 4 KiB pages, its WAL index 32 KiB.
FULL_BELOW_BYTES = 256 * 1024


def disk_full_at(folder: Path) -> bool:
    """Whether the file system of ``folder`` has (almost) no space left for this user.

    Tells a full disk from other I/O errors where the error itself does not say
    (SQLite reports a WAL index it cannot create as ``disk I/O error``).
    """
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW_BYTES
    except OSError:
        return False
