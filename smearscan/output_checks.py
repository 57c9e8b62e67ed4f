"""Checks a run makes before its first slide: can every output be written where it goes?

A batch writes ``OUT.xlsx``, ``OUT.zarr/``, ``OUT.log``, ``OUT.lock``,
``OUT_cells.parquet``, ``OUT_previews/`` and its ledger (with its lock and
results folder); the names come from :meth:`OutputPaths.for_report`. Without
these checks a folder named ``OUT.xlsx`` or a read-only mount shows up as a
traceback, some only after the whole night's slides ran (the report is
written last). :func:`check_outputs` finds what can be found from the file
system alone, without creating anything: a file where a folder goes or the
reverse, an existing output that is not writable, and a folder (or the
nearest existing one above it, which the run would create the rest under)
that is not a writable folder. Write permission is asked of the kernel
(``access(2)``), which also answers no on a read-only mount, for root too.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from smearscan.batch_ledger import ledger_path, results_dir_for
from smearscan.config import ProcessConfig
from smearscan.errors import OutputLocationError
from smearscan.results import OutputPaths
from smearscan.runlock import ledger_lock_path, lock_path_for


@dataclass(frozen=True)
class _Output:
    """One path a run writes: what it is (for the message) and whether it is a folder."""

    path: Path
    what: str
    folder: bool = False


def planned_outputs(report: Path, config: ProcessConfig) -> list[_Output]:
    """Every path a run writing ``report`` with ``config`` creates or replaces."""
    outputs = OutputPaths.for_report(report)
    planned = [
        _Output(outputs.report, "the report"),
        _Output(outputs.log, "the log file"),
        _Output(lock_path_for(outputs.report), "the run lock"),
        _Output(outputs.cells, "the cell table"),
        _Output(outputs.zarr, "the Zarr masks", folder=True),
    ]
    if config.output.write_previews:
        planned.append(_Output(outputs.previews, "the previews folder", folder=True))
    ledger = ledger_path(config, outputs)
    if ledger is not None:
        planned += [
            _Output(ledger, "the run ledger"),
            _Output(ledger_lock_path(ledger), "the ledger lock"),
            _Output(results_dir_for(ledger), "the ledger's results folder", folder=True),
        ]
    return planned


def check_outputs(report: Path, config: ProcessConfig) -> None:
    """Refuse a run whose outputs cannot be written, before anything is written.

    Args:
        report: The report path ``OUT.xlsx`` (``--out``).
        config: The run configuration (previews on or off, the ledger and its path).

    Raises:
        OutputLocationError: Every problem found, one per line: the path, what it is
            for, what is wrong and what to do.
    """
    problems: list[str] = []
    folders: dict[Path, str] = {}
    for output in planned_outputs(report, config):
        problem = _kind_problem(output)
        if problem:
            problems.append(problem)
        folders.setdefault(output.path.parent, output.what)
        if output.folder and output.path.is_dir():
            folders.setdefault(output.path, output.what)
    for folder, what in folders.items():
        problem = _folder_problem(folder, what)
        if problem and problem not in problems:
            problems.append(problem)
    if problems:
        raise OutputLocationError(
            "cannot write the outputs of --out "
            f"{report}:\n  " + "\n  ".join(problems) + "\nnothing was processed"
        )


def _kind_problem(output: _Output) -> str | None:
    """A folder where a file goes or the reverse, or an existing file not writable."""
    path = output.path
    if not os.path.lexists(path):
        return None
    if output.folder and not path.is_dir():
        return f"{path} ({output.what}) exists and is not a folder: move it away"
    if not output.folder and path.is_dir():
        return f"{path} ({output.what}) is a folder, not a file: move it away"
    if not output.folder and not os.access(path, os.W_OK):
        return f"{path} ({output.what}) exists and is not writable{_read_only_note(path)}"
    return None


def _folder_problem(folder: Path, what: str) -> str | None:
    """``folder`` (or the nearest existing folder above it) is not a writable folder."""
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} (on the way to {what}) exists and is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"{existing} (the folder of {what}) is not writable{_read_only_note(existing)}: "
            "choose another --out (or --ledger), or fix its permissions"
        )
    return None


def _read_only_note(path: Path) -> str:
    """`` (read-only file system)`` when ``path`` lies on a read-only mount."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return f" ({os.strerror(exc.errno or errno.EIO)})"
    return " (read-only file system)" if read_only else ""
