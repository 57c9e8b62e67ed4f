"""One row of the run ledger's ``slides`` table, as :class:`smearscan.ledger.Ledger`
returns it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class LedgerRow:
    """One ``slides`` row (one attempt), columns as in the schema; times UTC ISO 8601."""

    slide_id: int
    path: str
    name: str
    size_bytes: int
    mtime_ns: int
    sha256: str
    model_sha256: str
    classifier_sha256: str
    params_hash: str
    status: str
    error_stage: str
    error: str
    zarr_path: str
    preview_path: str
    seconds: float | None
    run_id: int
    attempts: int
    started_utc: str
    finished_utc: str | None
    updated_utc: str


_ROW_FIELDS = tuple(f.name for f in fields(LedgerRow))


def row_from(row: sqlite3.Row) -> LedgerRow:
    return LedgerRow(**{name: row[name] for name in _ROW_FIELDS})
