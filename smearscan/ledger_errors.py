"""Errors of the run ledger (:mod:`smearscan.ledger`), and how a damaged file is told apart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from smearscan.errors import SmearscanError


class LedgerError(SmearscanError):
    """The ledger cannot be used (not a ledger, newer schema, busy, unknown row)."""


class LedgerCorruptError(LedgerError):
    """The ledger file is damaged beyond its header (SQLite reports a malformed database)."""


#: SQLite's primary result code of a damaged database file (``SQLITE_CORRUPT``; a file
#: that is no database at all is ``SQLITE_NOTADB``, "not a usable ledger").
_SQLITE_CORRUPT = 11


def is_corrupt(exc: sqlite3.Error) -> bool:
    """Whether an SQLite error says the database file is damaged."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and (code & 0xFF) == _SQLITE_CORRUPT) or "malformed" in str(exc)


def corrupt_error(path: Path, problem: object) -> LedgerCorruptError:
    """The error of a damaged ledger: what is wrong and the operator's three ways out."""
    return LedgerCorruptError(
        f"ledger {path} is damaged ({' '.join(str(problem).split())}). Check it with "
        f"`sqlite3 {path} 'PRAGMA integrity_check'`; restore it from your backup of it if "
        f"you keep one, or move it aside (`mv {path} {path}.damaged`, with its -wal and -shm "
        "files) to start a fresh ledger: the next run then processes every slide again"
    )
