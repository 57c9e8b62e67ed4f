"""The run ledger of nightly batches: one SQLite file that remembers every slide seen.

A ``slides`` row is one attempt at one (absolute path, content sha256, model
sha256, classifier sha256, parameters hash), a unique key: a slide done with the
same content, models and parameters is one ``ok`` row, skipped on re-runs.
WAL journal, ``synchronous=FULL`` and one ``BEGIN IMMEDIATE`` transaction per
write keep the file consistent whenever the process is killed (SIGKILL too).
Keep the ledger on a local disk: WAL needs shared memory, not NFS/SMB.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smearscan import __version__
from smearscan.fingerprint import (
    FileIdentity,
    canonical_json,
    hash_file,
    params_hash,
    regular_file_stat,
)
from smearscan.ledger_errors import LedgerCorruptError, LedgerError, corrupt_error, is_corrupt
from smearscan.ledger_rows import SCHEMA_VERSION, LedgerQueries, LedgerRow, row_from

__all__ = [
    "FileIdentity",
    "Ledger",
    "LedgerCorruptError",
    "LedgerError",
    "LedgerRow",
    "params_hash",
]

logger = logging.getLogger(__name__)

RUN_STATUSES = ("running", "finished", "interrupted")
FAILED_REASON = "failed (use --retry-failed)"
#: Reason of a slide row a run has planned but not yet started (status ``skipped``).
QUEUED = "queued: not started yet"
#: Started attempts after which a slide left ``running`` by killed runs is not tried again
#: without ``--retry-failed``: a slide that kills or hangs the process each night
#: must not keep the nights after it from finishing.
MAX_INTERRUPTIONS = 3
#: Reason of a slide whose last attempt failed for a passing cause (:meth:`Ledger.mark_retry`).
RETRY_REASON = "failed before for a passing cause: tried again"
INTERRUPTED_REASON = (
    f"the runs processing it were killed {MAX_INTERRUPTIONS} times (use --retry-failed)"
)

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_utc TEXT NOT NULL, finished_utc TEXT, host TEXT NOT NULL, pid INTEGER NOT NULL,
        version TEXT NOT NULL, params_json TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'interrupted')))""",
    """CREATE TABLE slides (slide_id INTEGER PRIMARY KEY AUTOINCREMENT,
        path TEXT NOT NULL, name TEXT NOT NULL, size_bytes INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, model_sha256 TEXT NOT NULL,
        classifier_sha256 TEXT NOT NULL, params_hash TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'skipped')),
        error_stage TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',
        zarr_path TEXT NOT NULL DEFAULT '', preview_path TEXT NOT NULL DEFAULT '', seconds REAL,
        run_id INTEGER NOT NULL REFERENCES runs (run_id), attempts INTEGER NOT NULL DEFAULT 1,
        started_utc TEXT NOT NULL, finished_utc TEXT, updated_utc TEXT NOT NULL,
        UNIQUE (path, sha256, model_sha256, classifier_sha256, params_hash))""",
    "CREATE INDEX slides_updated ON slides (updated_utc)",
    "CREATE INDEX slides_run ON slides (run_id)",
)
_KEY_COLS = "path, sha256, model_sha256, classifier_sha256, params_hash"
_KEY = " AND ".join(f"{c} = ?" for c in _KEY_COLS.split(", "))


def _key(
    identity: FileIdentity, model_sha: str, classifier_sha: str, params_hash: str
) -> tuple[str, str, str, str, str]:
    """The values of :data:`_KEY_COLS` for one slide content, models and parameters."""
    return (identity.path, identity.sha256, model_sha, classifier_sha, params_hash)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (True where that cannot be told)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate it on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger(LedgerQueries):
    """An open run ledger (:meth:`Ledger.open`; a context manager; threads may share one)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn, self.path = conn, path
        self._lock = threading.RLock()
        self._own_runs: set[int] = set()
        self._closed = False
        self.host = socket.gethostname()

    @classmethod
    def open(cls, path: str | Path, *, timeout_s: float = 30.0) -> Ledger:
        """Open the ledger at ``path``, creating it (and its folder) when missing.

        Args:
            path: SQLite file on a local disk.
            timeout_s: How long a write waits for another process's transaction (s).

        Raises:
            LedgerError: Not SQLite, not a smearscan ledger, or a newer schema.
            LedgerCorruptError: Damaged beyond its header (``PRAGMA quick_check`` fails).
        """
        path = Path(os.path.abspath(Path(path).expanduser()))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        ledger = cls(conn, path)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("ledger %s: journal mode is %s, not WAL", path, mode)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            ledger._init_schema()
            ledger._check_pages()
        except sqlite3.DatabaseError as exc:
            conn.close()
            if is_corrupt(exc):
                raise corrupt_error(path, exc) from exc
            raise LedgerError(f"{path} is not a usable smearscan ledger ({exc})") from exc
        except LedgerError:
            conn.close()
            raise
        return ledger

    @classmethod
    def open_snapshot(cls, path: str | Path) -> Ledger:
        """The ledger at ``path`` read-only, as its main file holds it (SQLite
        ``immutable``: no WAL, nothing written), for a disk too full to open it
        normally; an empty in-memory ledger when the file cannot be read. Every
        write to it raises :class:`LedgerError`."""
        path = Path(os.path.abspath(Path(path).expanduser()))
        try:
            conn = sqlite3.connect(
                f"{path.as_uri()}?immutable=1", uri=True, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
            conn.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.Error as exc:
            logger.warning("ledger %s unreadable (%s): taken as empty", path, exc)
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            empty = cls(conn, path)
            empty._init_schema()
            return empty
        conn.row_factory = sqlite3.Row
        return cls(conn, path)

    def _init_schema(self) -> None:
        with self._tx() as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "schema_version" not in tables:
                if tables - {"sqlite_sequence"}:
                    raise LedgerError(
                        f"{self.path} is an SQLite file of another program "
                        f"(tables {sorted(tables)}); use another ledger path"
                    )
                for statement in _SCHEMA:
                    c.execute(statement)
                c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                logger.info("created ledger %s (schema %d)", self.path, SCHEMA_VERSION)
                return
            version = c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version != SCHEMA_VERSION:  # no older schema exists yet: no migrations
            raise LedgerError(
                f"ledger {self.path} has schema version {version}; this smearscan "
                f"({__version__}) knows version {SCHEMA_VERSION}: upgrade smearscan or use "
                "another ledger path"
            )

    def _check_pages(self) -> None:
        """``PRAGMA quick_check`` (every page read once, a few ms for a year of nights).

        Raises:
            LedgerCorruptError: A page is damaged.
        """
        problems = [str(r[0]) for r in self._conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise corrupt_error(self.path, "; ".join(problems))

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed, or none of it."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise LedgerError(f"ledger {self.path} is busy or read-only: {exc}") from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    if is_corrupt(exc):
                        raise corrupt_error(self.path, exc) from exc
                    raise LedgerError(f"ledger {self.path}: write failed: {exc}") from exc
                raise

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                if is_corrupt(exc):
                    raise corrupt_error(self.path, exc) from exc
                raise LedgerError(f"ledger {self.path}: read failed: {exc}") from exc

    def close(self) -> None:
        """Mark runs this object started and did not finish ``interrupted``; close."""
        if self._closed:
            return
        try:
            for run_id in sorted(self._own_runs):
                logger.warning(
                    "ledger %s: run %d closed unfinished: interrupted", self.path, run_id
                )
                try:
                    self.finish_run(run_id, "interrupted")
                except LedgerError as exc:  # a full disk: the next run finds it stale
                    logger.error("ledger %s: run %d left 'running': %s", self.path, run_id, exc)
        finally:
            self._conn.close()
            self._closed = True

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start_run(self, params: Mapping[str, Any], *, exclusive: bool = False) -> int:
        """Record a new ``running`` run, after :meth:`recover_stale_runs`; return its id.

        Args:
            params: The command and every parameter, stored as canonical JSON.
            exclusive: The caller holds the ledger's run lock, so every other
                ``running`` run is stale, whatever its host.
        """
        self.recover_stale_runs(exclusive=exclusive)
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO runs (started_utc, host, pid, version, params_json, "
                "status) VALUES (?, ?, ?, ?, ?, 'running')",
                (_now(), self.host, os.getpid(), __version__, canonical_json(params)),
            )
        run_id = int(cur.lastrowid or 0)
        self._own_runs.add(run_id)
        logger.info("ledger %s: run %d started", self.path, run_id)
        return run_id

    def finish_run(self, run_id: int, status: str = "finished") -> None:
        """Close run ``run_id`` with ``status`` (``finished`` or ``interrupted``)."""
        if status not in RUN_STATUSES[1:]:
            raise ValueError(f"run status must be 'finished' or 'interrupted', not {status!r}")
        with self._tx() as c:
            cur = c.execute(
                "UPDATE runs SET status = ?, finished_utc = ? WHERE run_id = ?",
                (status, _now(), run_id),
            )
            if cur.rowcount != 1:
                raise LedgerError(f"ledger {self.path} has no run {run_id}")
        self._own_runs.discard(run_id)

    def _alive(self, run_id: int, host: str, pid: int, exclusive: bool = False) -> bool:
        """Whether a ``running`` run may still be running (a pid of this host is checked)."""
        if run_id in self._own_runs:
            return True
        if exclusive:
            return False
        if host != self.host:
            return True
        return pid != os.getpid() and _pid_alive(pid)

    def recover_stale_runs(self, *, exclusive: bool = False) -> list[int]:
        """Mark ``running`` runs whose process is gone ``interrupted``; return their ids.

        Runs of other hosts are judged stale only with ``exclusive``. Their
        slides stay ``running`` and are reported by :meth:`interrupted_slides`.
        """
        rows = self._query("SELECT run_id, host, pid FROM runs WHERE status = 'running'")
        stale = [r[0] for r in rows if not self._alive(r[0], r[1], r[2], exclusive)]
        if stale:
            with self._tx() as c:
                c.executemany(
                    "UPDATE runs SET status = 'interrupted' WHERE run_id = ? "
                    "AND status = 'running'",
                    [(run_id,) for run_id in stale],
                )
            logger.warning("ledger %s: runs %s were killed: interrupted", self.path, stale)
        return stale

    def file_identity(self, path: str | Path, *, verify: bool = False) -> FileIdentity:
        """Size, mtime and content sha256 of a slide file.

        Cheap path: when the ledger holds a row of this absolute path with the
        same size (bytes) and mtime (ns), its sha256 is reused without reading
        the file (``hashed=False``), so re-checking unchanged slides costs one
        ``stat`` and one indexed query each. A rewrite keeping both size and
        mtime then goes unnoticed; ``verify=True`` always reads the file.
        Otherwise the file is hashed in 1 MiB chunks (``hashed=True``).

        Raises:
            InputError: Missing, not a regular file, unreadable, or changed while
                it was hashed (still being copied).
        """
        path = os.path.abspath(path)
        st = regular_file_stat(path)
        if not verify:
            rows = self._query(
                "SELECT sha256 FROM slides WHERE path = ? AND size_bytes = ? AND "
                "mtime_ns = ? ORDER BY updated_utc DESC LIMIT 1",
                (path, st.st_size, st.st_mtime_ns),
            )
            if rows:
                return FileIdentity(path, st.st_size, st.st_mtime_ns, rows[0][0], hashed=False)
        return hash_file(path)

    def should_process(
        self,
        identity: FileIdentity,
        model_sha: str,
        classifier_sha: str,
        params_hash: str,
        *,
        force: bool = False,
        retry_failed: bool = False,
    ) -> tuple[bool, str]:
        """Whether a slide needs processing, and why.

        Returns:
            ``(process, reason)``, reason one of: ``forced``; ``done`` (an ``ok``
            row with this content, models and parameters); ``failed (use
            --retry-failed)``, or ``retry failed`` with ``retry_failed``;
            :data:`RETRY_REASON` (failed for a passing cause, :meth:`mark_retry`);
            ``interrupted`` (left ``running`` by a killed run), or
            :data:`INTERRUPTED_REASON` after :data:`MAX_INTERRUPTIONS` attempts
            (processed again only with ``retry_failed``); ``in progress``
            (``running`` in a live run; not processed); ``skipped before``;
            ``changed`` (path known with other content, models or parameters);
            ``new``.
        """
        if force:
            return True, "forced"
        key = _key(identity, model_sha, classifier_sha, params_hash)
        rows = self._query(
            "SELECT s.status, run_id, r.status, r.host, r.pid, s.attempts, s.error_stage "
            f"FROM slides s JOIN runs r USING (run_id) WHERE {_KEY}",
            key,
        )
        if rows:
            status, run_id, run_status, host, pid, attempts, error_stage = tuple(rows[0])
            if status == "ok":
                return False, "done"
            if status == "failed":
                return (True, "retry failed") if retry_failed else (False, FAILED_REASON)
            if status == "skipped":
                return True, RETRY_REASON if error_stage else "skipped before"
            if run_status == "running" and self._alive(run_id, host, pid):
                return False, "in progress"
            if attempts >= MAX_INTERRUPTIONS and not retry_failed:
                return False, INTERRUPTED_REASON
            return True, "interrupted"
        if self._query("SELECT 1 FROM slides WHERE path = ? LIMIT 1", (identity.path,)):
            return True, "changed"
        return True, "new"

    def queue(
        self,
        identity: FileIdentity,
        model_sha: str,
        classifier_sha: str,
        params_hash: str,
        *,
        run_id: int,
        name: str | None = None,
    ) -> int:
        """Record that run ``run_id`` will process this slide; return the row's ``slide_id``.

        The row is ``skipped`` with the reason :data:`QUEUED` until :meth:`start`:
        a run killed before it got to the slide leaves it to be processed
        again, without counting an attempt. A known key reuses its row
        (outputs and error cleared).

        Args:
            name: The slide's name as found under the input (default: file name).
        """
        now = _now()
        key = _key(identity, model_sha, classifier_sha, params_hash)
        sizes = (identity.size_bytes, identity.mtime_ns)
        with self._tx() as c:
            c.execute(
                f"INSERT INTO slides ({_KEY_COLS}, name, size_bytes, mtime_ns, status, error, "
                "run_id, attempts, started_utc, updated_utc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'skipped', ?, ?, 0, ?, ?) "
                f"ON CONFLICT ({_KEY_COLS}) DO UPDATE SET name = excluded.name, "
                "size_bytes = excluded.size_bytes, mtime_ns = excluded.mtime_ns, "
                "status = 'skipped', error_stage = '', error = excluded.error, zarr_path = '', "
                "preview_path = '', seconds = NULL, run_id = excluded.run_id, "
                "finished_utc = NULL, updated_utc = excluded.updated_utc",
                (*key, name or Path(identity.path).name, *sizes, QUEUED, run_id, now, now),
            )
            return int(c.execute(f"SELECT slide_id FROM slides WHERE {_KEY}", key).fetchone()[0])

    def start(self, slide_id: int) -> None:
        """Record that slide row ``slide_id`` starts now: ``running``, ``attempts`` + 1."""
        now = _now()
        with self._tx() as c:
            cur = c.execute(
                "UPDATE slides SET status = 'running', error_stage = '', error = '', "
                "attempts = attempts + 1, started_utc = ?, finished_utc = NULL, "
                "updated_utc = ? WHERE slide_id = ?",
                (now, now, slide_id),
            )
            if cur.rowcount != 1:
                raise LedgerError(f"ledger {self.path} has no slide row {slide_id}")

    def mark_running(
        self,
        identity: FileIdentity,
        model_sha: str,
        classifier_sha: str,
        params_hash: str,
        *,
        run_id: int,
        name: str | None = None,
    ) -> int:
        """:meth:`queue` then :meth:`start` at once; return the row's ``slide_id``."""
        slide_id = self.queue(
            identity, model_sha, classifier_sha, params_hash, run_id=run_id, name=name
        )
        self.start(slide_id)
        return slide_id

    def _finish(self, slide_id: int, status: str, **columns: str | float) -> None:
        now = _now()
        cols = {"error_stage": "", "error": "", **columns}
        cols |= {"status": status, "finished_utc": now, "updated_utc": now}
        sets = ", ".join(f"{name} = ?" for name in cols)
        with self._tx() as c:
            cur = c.execute(
                f"UPDATE slides SET {sets} WHERE slide_id = ?", (*cols.values(), slide_id)
            )
            if cur.rowcount != 1:
                raise LedgerError(f"ledger {self.path} has no slide row {slide_id}")

    def mark_done(
        self,
        slide_id: int,
        *,
        zarr_path: str | Path = "",
        preview_path: str | Path = "",
        seconds: float = 0.0,
    ) -> None:
        """Record slide row ``slide_id`` ``ok`` with its Zarr group, preview and wall time (s)."""
        outputs = {"zarr_path": str(zarr_path), "preview_path": str(preview_path)}
        self._finish(slide_id, "ok", seconds=float(seconds), **outputs)

    def mark_failed(self, slide_id: int, stage: str, message: str, *, seconds: float = 0.0) -> None:
        """Record slide row ``slide_id`` ``failed`` in ``stage`` with ``message``; wall time (s)."""
        self._finish(slide_id, "failed", error_stage=stage, error=message, seconds=float(seconds))

    def mark_retry(self, slide_id: int, stage: str, message: str, *, seconds: float = 0.0) -> None:
        """Record slide row ``slide_id`` failed in ``stage`` for a passing cause (a full
        disk, a vanished file: :mod:`smearscan.failure_kinds`): ``skipped`` with the
        stage and message, so the next run processes it again without ``--retry-failed``."""
        self._finish(slide_id, "skipped", error_stage=stage, error=message, seconds=float(seconds))

    def mark_skipped(self, slide_id: int, reason: str) -> None:
        """Record slide row ``slide_id`` ``skipped`` (not processed, so not done)."""
        self._finish(slide_id, "skipped", error=reason, seconds=0.0)

    def find(
        self, identity: FileIdentity, model_sha: str, classifier_sha: str, params_hash: str
    ) -> LedgerRow | None:
        """The row of this slide content, models and parameters, or None."""
        key = _key(identity, model_sha, classifier_sha, params_hash)
        rows = self._query(f"SELECT * FROM slides WHERE {_KEY}", key)
        return row_from(rows[0]) if rows else None
