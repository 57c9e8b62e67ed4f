"""Rows of the run ledger's ``slides`` table and the read-only queries over them
(:class:`LedgerQueries`, a part of :class:`smearscan.ledger.Ledger`)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SLIDE_STATUSES = ("running", "ok", "failed", "skipped")
SCHEMA_VERSION = 1  # a ledger with a newer schema is refused


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


class LedgerQueries:
    """The read-only queries of :class:`smearscan.ledger.Ledger` (which provides the
    connection, :meth:`_query` and :meth:`_alive`)."""

    path: Path

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    def _alive(self, run_id: int, host: str, pid: int, exclusive: bool = False) -> bool:
        raise NotImplementedError

    def interrupted_slides(self) -> list[LedgerRow]:
        """Rows left ``running`` by a run no longer alive (killed): not done, processed again."""
        rows = self._query(
            "SELECT s.*, r.status AS r_status, r.host AS r_host, r.pid AS r_pid "
            "FROM slides s JOIN runs r USING (run_id) "
            "WHERE s.status = 'running' ORDER BY s.path"
        )
        return [
            row_from(r)
            for r in rows
            if r["r_status"] != "running" or not self._alive(r["run_id"], r["r_host"], r["r_pid"])
        ]

    def slides(
        self,
        since: datetime | None = None,
        status: str | None = None,
        *,
        latest_per_path: bool = False,
    ) -> list[LedgerRow]:
        """Rows of the ledger ordered by path, then time (e.g. to build a report).

        Args:
            since: Only rows updated at or after this time (naive means UTC).
            status: Only rows with this status (one of :data:`SLIDE_STATUSES`).
            latest_per_path: Only the most recently updated row of each path.
        """
        where, args = ["1"], []
        if since is not None:
            aware = since if since.tzinfo else since.replace(tzinfo=UTC)
            where.append("updated_utc >= ?")
            args.append(aware.astimezone(UTC).isoformat(timespec="microseconds"))
        if status is not None:
            if status not in SLIDE_STATUSES:
                raise ValueError(f"slide status must be one of {SLIDE_STATUSES}, not {status!r}")
            where.append("status = ?")
            args.append(status)
        if latest_per_path:
            where.append(
                "slide_id = (SELECT t.slide_id FROM slides t WHERE t.path = slides.path "
                "ORDER BY t.updated_utc DESC, t.slide_id DESC LIMIT 1)"
            )
        sql = f"SELECT * FROM slides WHERE {' AND '.join(where)} ORDER BY path, updated_utc"
        return [row_from(r) for r in self._query(sql, tuple(args))]

    def runs(self, last: int = 5) -> list[dict[str, Any]]:
        """The last ``last`` runs, newest first: their columns but ``params_json``, and
        ``slides``, the count of their slide rows per status."""
        found = []
        for r in self._query("SELECT * FROM runs ORDER BY run_id DESC LIMIT ?", (last,)):
            per = self._query(
                "SELECT status, COUNT(*) FROM slides WHERE run_id = ? GROUP BY status",
                (r["run_id"],),
            )
            info = {k: r[k] for k in r.keys() if k != "params_json"}  # noqa: SIM118
            found.append(info | {"slides": {p[0]: p[1] for p in per}})
        return found

    def summary(self, last_runs: int = 5) -> dict[str, Any]:
        """What ``smearscan status`` shows: ``ledger``, ``schema_version``, ``slides``
        (``paths`` and a count per status of each path's latest row),
        ``interrupted_slides`` (count) and ``runs`` (:meth:`runs`).
        """
        latest = self.slides(latest_per_path=True)
        return {
            "ledger": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "slides": {"paths": len(latest)}
            | {s: sum(r.status == s for r in latest) for s in SLIDE_STATUSES},
            "interrupted_slides": len(self.interrupted_slides()),
            "runs": self.runs(last_runs),
        }
