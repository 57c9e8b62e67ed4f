"""Output names of the slides of a batch: one safe path component per slide.

A slide's Zarr group (``OUT.zarr/<key>``) and preview PNGs are named by its
key, so a key can never contain a separator, start with a dot or leave the
output directory, whatever the input file was called.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from smearscan.errors import OutputPathError


def slide_key(relative: str) -> str:
    """Group name for a slide: its relative path with unsafe characters replaced.

    ``"run 1/field#3.jpg"`` becomes ``"run_1__field_3.jpg"``. Keys never
    contain ``/`` or start with a dot, so a slide can never write outside
    its own group.
    """
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in Path(relative).as_posix().split("/")]
    key = "__".join(p for p in parts if p not in ("", ".", ".."))
    return key.lstrip(".") or "slide"


def unique_keys(relatives: Iterable[str]) -> list[str]:
    """:func:`slide_key` for each path, suffixed ``-2``, ``-3``... where two collide."""
    seen: dict[str, int] = {}
    keys = []
    for rel in relatives:
        key = slide_key(rel)
        n = seen.get(key, 0) + 1
        seen[key] = n
        keys.append(key if n == 1 else f"{key}-{n}")
    return keys


def check_key(key: str) -> str:
    """Return ``key`` if it is one safe path component (what :func:`slide_key` makes).

    Output names (a Zarr group, a preview PNG) are derived from it, so it must
    not contain a separator, start with a dot (``.``, ``..``, hidden) or hold
    characters outside ``[A-Za-z0-9._-]``.

    Raises:
        OutputPathError: Anything else, e.g. ``"../x"`` or ``"/etc"``.
    """
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", key):
        raise OutputPathError(
            f"slide key {key!r} is not a single safe name; it would leave the output directory"
        )
    return key


def slide_group_path(zarr_path: Path, key: str) -> Path:
    """Filesystem path of a slide's group, guaranteed to lie inside ``zarr_path``.

    Raises:
        OutputPathError: ``key`` is unsafe, or the group is a link leading elsewhere.
    """
    root = Path(zarr_path)
    target = root / check_key(key)
    if not target.resolve().is_relative_to(root.resolve()):
        raise OutputPathError(f"{target} leads outside {root}; refusing to write there")
    return target
