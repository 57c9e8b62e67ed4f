"""Grouping of field images into patients/slides (``--group-by``), so a differential adds up.

``--group-by`` is either

* a **CSV manifest** (a value ending in ``.csv``, or naming an existing file):
  a header row with the columns ``image`` and ``group`` (other columns are
  ignored), one row per image. ``image`` is the file name or the path relative
  to the input folder (as in the Summary's ``slide`` column, ``/``-separated);
  a relative path is matched first, then the bare file name; or
* a **regular expression** searched in each file name (not its folder): the
  group is the named group ``(?P<group>...)`` when the pattern has one, else
  group 1, else the whole match. ``'^(Im\\d+)'`` puts ``Im001_1_a.jpg`` and
  ``Im001_1_b.jpg`` into group ``Im001``.

A file the pattern does not match (or whose group comes out empty), or that
the manifest does not list, becomes a group of its own named after the file,
with a warning in the log and a note in its Summary row; it is never dropped.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from smearscan.errors import ConfigError

log = logging.getLogger(__name__)

#: Note of a field that ``--group-by`` does not place into a group.
UNGROUPED_NOTE = "not matched by --group-by: its own group"


def is_manifest(spec: str) -> bool:
    """True when ``spec`` names a CSV manifest rather than a pattern."""
    return spec.lower().endswith(".csv") or Path(spec).is_file()


@dataclass(frozen=True)
class PatternGrouper:
    """Group by a regular expression searched in the file name."""

    pattern: re.Pattern[str]

    @classmethod
    def compile(cls, spec: str) -> PatternGrouper:
        """Compile ``spec``.

        Raises:
            ConfigError: Not a valid regular expression.
        """
        try:
            return cls(re.compile(spec))
        except re.error as exc:
            raise ConfigError(
                f"--group-by {spec!r} is not a valid regular expression ({exc}); give a "
                "pattern such as '^(Im\\d+)' or the path of a CSV manifest (image,group)"
            ) from exc

    def group_of(self, relative: str) -> str | None:
        """Group of a field (``relative``: its path under the input), or None."""
        match = self.pattern.search(PurePosixPath(relative).name)
        if match is None:
            return None
        if "group" in self.pattern.groupindex:
            value = match.group("group")
        elif self.pattern.groups >= 1:
            value = match.group(1)
        else:
            value = match.group(0)
        return value or None


@dataclass(frozen=True)
class ManifestGrouper:
    """Group by a CSV manifest ``image,group``."""

    path: Path
    by_path: dict[str, str]
    by_name: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> ManifestGrouper:
        """Read and check a manifest.

        Raises:
            ConfigError: Missing or unreadable file, missing columns, an empty
                value or an image listed twice with different groups (the
                message names the file and line).
        """
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--group-by manifest {path} cannot be read: {exc}") from exc
        reader = csv.DictReader(text.splitlines())
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "image" not in columns or "group" not in columns:
            raise ConfigError(
                f"{path}:1: a --group-by manifest needs a header with the columns image,group; "
                f"found {', '.join(columns) or 'nothing'}"
            )
        reader.fieldnames = columns
        by_path: dict[str, str] = {}
        where: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            image, group = (row.get("image") or "").strip(), (row.get("group") or "").strip()
            if not image and not group:
                continue  # blank line
            if not image or not group:
                raise ConfigError(f"{path}:{line}: both image and group are needed, got {row}")
            key = PurePosixPath(image.replace("\\", "/")).as_posix().removeprefix("./")
            if by_path.get(key, group) != group:
                raise ConfigError(
                    f"{path}:{line}: {image} is already in group {by_path[key]!r} "
                    f"(line {where[key]}), not {group!r}"
                )
            by_path[key], where[key] = group, line
        by_name: dict[str, str] = {}
        for key, group in by_path.items():
            by_name.setdefault(PurePosixPath(key).name, group)
        return cls(path, by_path, by_name)

    def group_of(self, relative: str) -> str | None:
        """Group of a field (``relative``: its path under the input), or None."""
        posix = PurePosixPath(relative.replace("\\", "/"))
        return self.by_path.get(posix.as_posix()) or self.by_name.get(posix.name)


Grouper = PatternGrouper | ManifestGrouper


def make_grouper(spec: str) -> Grouper:
    """The grouper of a ``--group-by`` value (manifest or pattern, see the module docstring).

    Raises:
        ConfigError: Bad pattern or malformed manifest.
    """
    if is_manifest(spec):
        return ManifestGrouper.read(Path(spec))
    return PatternGrouper.compile(spec)


def assign_groups(relatives: Sequence[str], spec: str | None) -> tuple[list[str], list[bool]]:
    """The group of each field.

    Args:
        relatives: Each field's path under its input (the Summary's ``slide``).
        spec: ``--group-by`` value, or None (every field its own group).

    Returns:
        ``(groups, matched)``: one group name per field and whether ``spec``
        placed it (False: its own group, named after the field).

    Raises:
        ConfigError: Bad pattern or malformed manifest.
    """
    if spec is None:
        return list(relatives), [True] * len(relatives)
    grouper = make_grouper(spec)
    groups, matched = [], []
    for relative in relatives:
        group = grouper.group_of(relative)
        if group is None:
            log.warning("%s: %s (%s)", relative, UNGROUPED_NOTE, spec)
        groups.append(group if group is not None else relative)
        matched.append(group is not None)
    if isinstance(grouper, ManifestGrouper):
        listed = set(grouper.by_path)
        found = {PurePosixPath(r.replace("\\", "/")).as_posix() for r in relatives}
        names = {PurePosixPath(r).name for r in found}
        missing = [k for k in listed if k not in found and PurePosixPath(k).name not in names]
        if missing:
            log.warning(
                "%s: %d listed image(s) not among the inputs: %s",
                grouper.path,
                len(missing),
                ", ".join(sorted(missing)[:5]),
            )
    return groups, matched
