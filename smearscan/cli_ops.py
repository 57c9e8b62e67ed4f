"""``smearscan status``: a summary of a run ledger (:mod:`smearscan.ledger`) for
operators, registered on the ``smearscan`` app by :mod:`smearscan.cli`.

Exit codes: 0 summary printed, 2 the ledger is missing, not a smearscan ledger, or
damaged (the message says how to check it and how to start afresh).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from smearscan.console import fail_usage

log = logging.getLogger("smearscan.cli")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_STATUS_ORDER = ("ok", "failed", "skipped", "running")  # how counts are listed


def check_ledger_file(path: Path) -> None:
    """Refuse (usage error, exit 2) a ledger path that is not an existing smearscan ledger.

    Read-only checks, so that ``status`` never creates or changes a ledger: the
    file exists, is a regular file, starts with the SQLite header and has the
    ledger's ``schema_version`` table.
    """
    if not path.exists():
        fail_usage(f"no ledger at {path}: check the --ledger path")
    if not path.is_file():
        fail_usage(f"--ledger {path} is not a file")
    try:
        with path.open("rb") as fh:
            header = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        fail_usage(f"cannot read ledger {path}: {exc}")
    if header != _SQLITE_MAGIC:
        fail_usage(f"{path} is not a smearscan ledger (not an SQLite file)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            conn.close()
    except sqlite3.Error as exc:
        from smearscan.ledger_errors import corrupt_error, is_corrupt

        if is_corrupt(exc):
            fail_usage(str(corrupt_error(path, exc)))
        fail_usage(f"{path} is not a usable smearscan ledger ({exc})")
    if not {"schema_version", "runs", "slides"} <= tables:
        fail_usage(f"{path} is an SQLite file but not a smearscan ledger (tables {sorted(tables)})")


def _when(stamp: str | None) -> str:
    """``2026-12-02 01:30:05`` (UTC) from a ledger's ISO time, ``-`` for none."""
    if not stamp:
        return "-"
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _counts(per_status: dict[str, Any]) -> str:
    """``ok 3, failed 1`` from a count per status (zeros left out); ``none`` if empty."""
    order = {status: i for i, status in enumerate(_STATUS_ORDER)}
    ranked = sorted(per_status.items(), key=lambda item: (order.get(item[0], 99), item[0]))
    parts = [f"{status} {n}" for status, n in ranked if n]
    return ", ".join(parts) if parts else "none"


def format_summary(summary: dict[str, Any]) -> list[str]:
    """The lines ``smearscan status`` prints for a :meth:`Ledger.summary` dict."""
    slides = dict(summary["slides"])
    paths = slides.pop("paths", 0)
    interrupted = int(summary.get("interrupted_slides", 0))
    lines = [
        f"ledger {summary['ledger']} (schema {summary['schema_version']})",
        f"slides: {paths} path(s), latest attempt of each: {_counts(slides)}",
        f"interrupted slides: {interrupted}"
        + (" (left running by a killed run; not done)" if interrupted else ""),
    ]
    runs = summary.get("runs", [])
    if not runs:
        lines.append("runs: none recorded")
        return lines
    lines.append(f"last {len(runs)} run(s), newest first (times UTC):")
    for run in runs:
        lines.append(
            f"  run {run['run_id']:>4}  {_when(run.get('started_utc'))} -> "
            f"{_when(run.get('finished_utc'))}  {run['status']:<11}  "
            f"host {run['host']} pid {run['pid']}  smearscan {run['version']}  "
            f"slides: {_counts(run.get('slides', {}))}"
        )
    return lines


def status(
    ledger: Annotated[
        Path | None,
        typer.Option("--ledger", help="The run ledger (SQLite) to summarise.", show_default=False),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Or the report of a run: its default ledger OUT_ledger.sqlite.",
            show_default=False,
        ),
    ] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="How many recent runs to show.")] = 5,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
) -> None:
    """Summarise a run ledger: the last runs (start, end, status, host, slides per
    status), the slides per status and the slides left interrupted.

    Never creates a ledger nor changes its rows. Exit codes: 0 printed, 2
    missing, not a smearscan ledger, or damaged.
    """
    from smearscan.ledger import Ledger, LedgerError
    from smearscan.results import OutputPaths

    which = "give the ledger with --ledger PATH, or the report with --out OUT.xlsx"
    if ledger is None:
        if out is None:
            fail_usage(which)
        ledger = OutputPaths.for_report(out).ledger
    elif out is not None:
        fail_usage(which)
    check_ledger_file(ledger)
    try:
        with Ledger.open(ledger, timeout_s=10.0) as opened:
            summary = opened.summary(last_runs=runs)
    except LedgerError as exc:
        fail_usage(str(exc))
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
        return
    for line in format_summary(summary):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add the operations commands (``status``) to ``app``."""
    app.command()(status)
