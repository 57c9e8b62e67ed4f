"""Finding the slides of a batch: files and folders walked, filtered, each file once.

Light on purpose (no image decoder is imported): listing the inputs is the
first thing every run does, including a nightly re-run in which every slide
is already done.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from smearscan.errors import InputError
from smearscan.results import SlideResult

logger = logging.getLogger(__name__)

SIDECAR_SUFFIXES: frozenset[str] = frozenset(
    {".md", ".txt", ".csv", ".tsv", ".json", ".xml", ".xyc", ".npz", ".npy", ".yaml", ".yml",
     ".toml", ".log", ".html", ".htm", ".parquet", ".xlsx", ".xls", ".db", ".sqlite", ".ini",
     ".lock", ".sqlite-wal", ".sqlite-shm", ".sqlite-journal"}
)  # fmt: skip
"""Companion files (annotations, notes, reports, run locks and ledgers) skipped by
:func:`list_inputs` without patterns."""

#: A folder with this name ending and an ``index.html`` is a run's review folder
#: (``OUT_previews/``): its PNGs are previews, never slides.
REVIEW_FOLDER_SUFFIX = "_previews"


@dataclass(frozen=True)
class SlideSource:
    """One input file found by :func:`list_inputs`.

    Attributes:
        path: Absolute path of the file (symlinks kept as found).
        relative: POSIX path relative to the input root it was found under; the
            file name for a file given directly. This is the ``slide`` key of the report.
        problem: Not a file but a folder that could not be listed (permission
            denied, I/O error): why. Its slides are unknown; the batch reports
            it as a failed row (:meth:`failure`) instead of leaving them out unsaid.
    """

    path: Path
    relative: str
    problem: str = ""

    def failure(self) -> SlideResult:
        """The report's row of a folder that could not be listed (stage ``list``)."""
        return SlideResult(
            slide=self.relative,
            path=str(self.path),
            status="failed",
            error_stage="list",
            error=self.problem,
            group=self.relative,
        )


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    """Case-insensitive fnmatch on the relative path or the name; ``**/`` also matches the root."""
    rel = relative.lower()
    name = rel.rsplit("/", 1)[-1]
    for pattern in (p.lower() for p in patterns):
        if fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(name, pattern):
            return True
        if pattern.startswith("**/") and fnmatch.fnmatchcase(rel, pattern[3:]):
            return True
    return False


def _entry_is(test: Callable[[], bool]) -> bool:
    """``DirEntry.is_dir``/``is_file`` that answers False on a symbolic link loop (ELOOP)."""
    try:
        return test()
    except OSError:
        return False


def _is_output_folder(entry: os.DirEntry[str], excluded: frozenset[str]) -> str:
    """Why a directory under an input is a smearscan output and not walked ("": walk it)."""
    if entry.name.lower().endswith(".zarr"):
        return "Zarr store"
    if os.path.realpath(entry.path) in excluded:
        return "an output of this run"
    if entry.name.endswith(REVIEW_FOLDER_SUFFIX) and os.path.isfile(
        os.path.join(entry.path, "index.html")
    ):
        return "a run's review folder"
    return ""


def _unlisted(directory: Path, prefix: str, exc: OSError) -> tuple[Path, str, str]:
    """What :func:`_walk` yields for a folder it cannot list: (path, name, problem)."""
    logger.error("cannot list %s: %s; its slides are not processed", directory, exc)
    why = exc.strerror or str(exc)
    return (
        directory,
        prefix.rstrip("/") or directory.name,
        f"cannot list the folder {directory} ({why}): the slides in it are not in this "
        "report; fix its permissions (or the disk) and run again",
    )


def _walk(root: Path, excluded: frozenset[str] = frozenset()) -> Iterator[tuple[Path, str, str]]:
    """Files under ``root`` as (path, POSIX relative path, ""), in no particular order.

    Skips names starting with '.', ``*.zarr`` directories, review folders of
    earlier runs (``*_previews/`` with an ``index.html``) and the directories
    in ``excluded`` (real paths). Directory symlinks
    are followed after every real directory, and only into directories not yet
    visited, so loops end and linked-in subtrees keep their real paths. Entries
    that are neither files nor directories (broken links, link loops, FIFOs)
    are yielded too, so that opening them gives an ``Errors`` row; they are
    never read. A folder that cannot be listed comes as (folder, its relative
    path, the problem), for an ``Errors`` row.
    """
    visited: set[tuple[int, int]] = set()
    stack: list[tuple[Path, str]] = [(root, "")]
    links: list[tuple[Path, str]] = []
    while stack or links:
        directory, prefix = stack.pop() if stack else links.pop()
        try:
            stat = directory.stat()
        except OSError as exc:
            yield _unlisted(directory, prefix, exc)
            continue
        if (stat.st_dev, stat.st_ino) in visited:
            logger.debug("skipping %s: directory already visited (symlink loop?)", directory)
            continue
        visited.add((stat.st_dev, stat.st_ino))
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            yield _unlisted(directory, prefix, exc)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = f"{prefix}{entry.name}"
            if _entry_is(entry.is_dir):
                why = _is_output_folder(entry, excluded)
                if why:
                    logger.debug("skipping %s: %s", entry.path, why)
                else:
                    todo = links if entry.is_symlink() else stack
                    todo.append((Path(entry.path), f"{relative}/"))
            else:
                if not _entry_is(entry.is_file):
                    logger.debug("%s: not a regular file (broken link, FIFO?)", entry.path)
                yield Path(entry.path), relative, ""


def list_inputs(
    inputs: Sequence[Path], patterns: Sequence[str] = (), exclude: Sequence[Path] = ()
) -> list[SlideSource]:
    """List the image files of a batch.

    Directories are walked recursively (hidden entries and ``*.zarr`` stores
    skipped, directory symlinks followed once). With ``patterns`` only files
    whose relative path or name matches one of them (case-insensitive
    ``fnmatch``) are kept; without, every file is kept except those with a
    :data:`SIDECAR_SUFFIXES` suffix. Files given directly obey the same
    filters except the hidden-name rule. Files that are not images are kept
    on purpose: opening them gives a per-file error for the report.

    Args:
        inputs: Files and/or directories.
        patterns: Glob patterns such as ``"*.tif"`` or ``"**/field_*.jpg"``.
        exclude: Files and folders never listed, whatever the patterns: the
            run's own outputs, when the report is written inside an input folder.

    Returns:
        Sources sorted by (input order, relative path), each resolved file once;
        a folder that could not be listed is one source with its ``problem``.

    Raises:
        InputError: An input does not exist, or is a Zarr store.
    """
    sources: list[SlideSource] = []
    excluded = frozenset(os.path.realpath(p) for p in exclude)
    seen: set[Path] = set()
    for item in inputs:
        root = Path(item).expanduser().absolute()
        if not root.exists():
            raise InputError(root, "input not found")
        if root.is_dir():
            if root.name.lower().endswith(".zarr"):
                raise InputError(root, "is a Zarr store (an output), not a folder of images")
            candidates = sorted(_walk(root, excluded), key=lambda found: found[1])
        else:
            candidates = [(root, root.name, "")]
        for path, relative, problem in candidates:
            if problem:  # a folder that could not be listed: always reported
                sources.append(SlideSource(path.absolute(), relative, problem))
                continue
            if patterns and not _matches(relative, patterns):
                continue
            if not patterns and path.suffix.lower() in SIDECAR_SUFFIXES:
                logger.debug("skipping companion file %s", path)
                continue
            resolved = Path(os.path.realpath(path))  # never raises on a link loop
            if str(resolved) in excluded:
                logger.debug("skipping %s: an output of this run", path)
                continue
            if resolved in seen:
                logger.debug("skipping %s: same file already listed", path)
                continue
            seen.add(resolved)
            sources.append(SlideSource(path.absolute(), relative))
    return sources
