"""Atomic file writes: write beside the target under a temporary name, then rename.

A crash or kill during the write leaves at most a hidden temporary file,
never a half-written file under the final name (``os.replace`` is atomic on
one filesystem).

* Temporary names are ``.{stem}-XXXXXXXX{suffix}`` (``XXXXXXXX``: the 8
  random characters of :func:`tempfile.mkstemp`), with the stem shortened
  so that the name stays within :data:`NAME_MAX` bytes whatever the target's
  name (a 255-byte target name works).
* The file gets the mode any new file gets (``0o666`` less the umask), not
  ``mkstemp``'s ``0600``: a report written by a service user is readable by
  the lab when the umask says so.
* The temporary files being written are known (:func:`remove_temps_in_progress`
  removes them, for a process about to die of a signal; :func:`track_temps`
  adds other temporary names, e.g. scratch folders), and those a killed
  process left are found by their name (:func:`remove_stale_temps`,
  :func:`remove_stale_temps_in`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: Longest file name (bytes) of the usual filesystems (ext4, xfs, btrfs, tmpfs).
NAME_MAX = 255
#: Random characters ``mkstemp`` puts into a name, and which.
_RANDOM_LEN = 8
_RANDOM_RE = f"[a-z0-9_]{{{_RANDOM_LEN}}}"
#: A suffix longer than this (bytes) is left out of the temporary name.
_MAX_SUFFIX_BYTES = 32

#: ``(folder, prefix, suffix)`` of the temporary names being written now, entered
#: before the file is created (a signal may come between ``mkstemp`` creating it and
#: returning its name). Only ``append``/``remove`` and ``list()`` touch it: each is
#: atomic under the GIL, so a signal handler reads it without a lock (one there could
#: deadlock with the code it interrupted).
_IN_PROGRESS: list[tuple[str, str, str]] = []


def _umask_from_proc() -> int | None:
    """The process umask from ``/proc/self/status`` (Linux >= 4.7), None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _umask_at_import() -> int:
    """The umask, read once when this module is imported.

    ``os.umask`` can only be read by setting it; doing that later, while other
    threads create files, would give them a wrong mode for a moment.
    """
    value = _umask_from_proc()
    if value is None:
        value = os.umask(0o022)
        os.umask(value)
    return value


_IMPORT_UMASK = _umask_at_import()


def current_umask() -> int:
    """The process umask: read from ``/proc`` now, else as it was at import."""
    value = _umask_from_proc()
    return _IMPORT_UMASK if value is None else value


def new_file_mode() -> int:
    """Permission bits a newly created file gets: ``0o666 & ~umask`` (``0o644`` under 022)."""
    return 0o666 & ~current_umask()


def _cut_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of its file-system encoding, never mid-character."""
    raw = os.fsencode(text)
    if len(raw) <= limit:
        return text
    cut = raw[: max(limit, 0)]
    for end in range(len(cut), max(len(cut) - 4, 0) - 1, -1):
        try:
            return cut[:end].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return os.fsdecode(cut)  # not UTF-8 (surrogate-escaped bytes): a byte prefix


def temp_affixes(path: Path) -> tuple[str, str]:
    """``(prefix, suffix)`` of :func:`atomic_write`'s temporary names for ``path``.

    ``prefix + 8 random characters + suffix`` is at most :data:`NAME_MAX`
    bytes: the stem is shortened as needed (a suffix over 32 bytes is left out).
    """
    path = Path(path)
    suffix = path.suffix if len(os.fsencode(path.suffix)) <= _MAX_SUFFIX_BYTES else ""
    budget = NAME_MAX - len(os.fsencode(suffix)) - _RANDOM_LEN - 2  # the dot and the dash
    return f".{_cut_bytes(path.stem, budget)}-", suffix


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it into place.

    The file ends up with mode ``0o666 & ~umask`` (:func:`new_file_mode`).

    Args:
        path: Final file path; its folder is created when missing.
        write: Writes the whole file to the path it is given.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = temp_affixes(path)
    names = track_temps(path.parent, prefix, suffix)
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
        try:
            os.close(fd)
            write(Path(tmp))
            os.chmod(tmp, new_file_mode())  # mkstemp made it 0600
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    finally:
        untrack_temps(names)
    return path


def track_temps(folder: Path | str, prefix: str, suffix: str = "") -> tuple[str, str, str]:
    """Enter the temporary names ``prefix + 8 random characters + suffix`` in ``folder``
    (files or folders, e.g. of :func:`tempfile.mkdtemp`) among those that
    :func:`remove_temps_in_progress` removes; call before creating them.

    Returns:
        The entry, for :func:`untrack_temps`.
    """
    entry = (os.fspath(folder), prefix, suffix)
    _IN_PROGRESS.append(entry)
    return entry


def untrack_temps(entry: tuple[str, str, str]) -> None:
    """Take an entry of :func:`track_temps` out again (the names are finished or gone)."""
    with contextlib.suppress(ValueError):
        _IN_PROGRESS.remove(entry)


def _temp_name_re(prefix: str, suffix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + _RANDOM_RE + re.escape(suffix))


def remove_temps_in_progress() -> None:
    """Remove the temporary files and folders being written now (:func:`track_temps`).

    For a process about to die of a signal: safe in a signal handler (no lock,
    no logging), never raises.
    """
    import shutil

    for folder, prefix, suffix in list(_IN_PROGRESS):
        pattern = _temp_name_re(prefix, suffix)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not pattern.fullmatch(entry.name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def _remove_matching(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Remove the plain files and links directly in ``folder`` whose name matches ``pattern``."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name) or entry.is_dir(follow_symlinks=False):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(Path(entry.path))
    if removed:
        log.info(
            "removed %d temporary file(s) a killed run left in %s: %s",
            len(removed),
            folder,
            ", ".join(p.name for p in removed),
        )
    return removed


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` of ``path`` left (killed mid-write).

    Only names of exactly that pattern (:func:`temp_affixes` plus the 8 random
    characters) beside ``path`` are touched. Call it only while no other process
    writes ``path`` (hold the output's lock).

    Returns:
        The files removed.
    """
    path = Path(path)
    prefix, suffix = temp_affixes(path)
    return _remove_matching(path.parent, _temp_name_re(prefix, suffix))


def remove_stale_temps_in(folder: Path, suffix: str) -> list[Path]:
    """Remove every :func:`atomic_write` temporary file ending in ``suffix`` in ``folder``.

    For folders that only this program writes (``OUT_previews/``, the ledger's
    stored results): any hidden ``.{stem}-XXXXXXXX{suffix}`` there is a leftover.
    Not recursive. Call it only while holding the output's lock.

    Returns:
        The files removed.
    """
    pattern = re.compile(r"\..+-" + _RANDOM_RE + re.escape(suffix))
    return _remove_matching(Path(folder), pattern)
