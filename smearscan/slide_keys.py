"""Output names of the slides of a batch: one safe path component per slide.

A slide's Zarr group (``OUT.zarr/<key>``) and preview PNGs are named by its
key, so a key can never contain a separator, start with a dot or leave the
output directory, whatever the input file was called.

A key is a function of the slide's relative path alone, so it is the same
for a slide in every run over one output, whatever other slides come and go
(a slide that took another's key would overwrite masks and previews that the
ledger's stored result of the other still points at):

* a *plain* path (ASCII letters, digits, ``.``, ``-`` and single inner ``_``
  per folder or file name, at most :data:`MAX_KEY_BYTES`) keeps its name,
  folders joined by ``__``: ``run1/f.jpg`` -> ``run1__f.jpg``, as before;
* any other path loses something when sanitised (``样本1.jpg`` and ``标本1.jpg``
  both give ``__1.jpg``; ``a b.jpg`` gives ``a_b.jpg``, like the file
  ``a_b.jpg``), so its sanitised name (cut to fit) is followed by
  ``-`` and :data:`HASH_CHARS` hex digits of the SHA-256 of the path:
  ``__1.jpg-3f0c9a1b2e``.

Plain keys are distinct for distinct paths, and never end like a hashed key,
so keys collide only when one relative path occurs twice in a batch (the
same file name given from two input folders): :func:`unique_keys` then names
the later ones by a hash of their absolute path.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from smearscan.errors import OutputPathError

#: Longest key (bytes; keys are ASCII). ``<key>.png``, the staging name
#: ``.<key>-XXXXXXXX.png`` and the staged group ``<key>-<pid>-<12 hex>`` then stay
#: well within the 255 bytes of a file name.
MAX_KEY_BYTES = 200
#: Hex digits of the path hash that makes a sanitised or cut key unique.
HASH_CHARS = 10

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: A folder or file name kept as it is: no ``_`` at either end or twice in a row, so
#: the ``__`` joining folders is unambiguous.
_PLAIN_PART = re.compile(r"[A-Za-z0-9.-]+(?:_[A-Za-z0-9.-]+)*")
_HASHED_END = re.compile(rf"-[0-9a-f]{{{HASH_CHARS}}}(?:-\d+)?")
#: Names a group cannot take inside the store (its own metadata).
_RESERVED = frozenset({"zarr.json", ".zgroup", ".zattrs", ".zarray"})


def _digest(text: str) -> str:
    """First :data:`HASH_CHARS` hex digits of the SHA-256 of ``text`` (as file-system bytes)."""
    try:
        data = text.encode("utf-8", "surrogateescape")  # undecodable names: their own bytes
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def _sanitised(relative: str) -> str:
    """The path with every unsafe character replaced by ``_``, folders joined by ``__``."""
    parts = [_UNSAFE.sub("_", p) for p in Path(relative).as_posix().split("/")]
    key = "__".join(p for p in parts if p not in ("", ".", ".."))
    return key.lstrip(".") or "slide"


def _is_plain(relative: str, key: str) -> bool:
    """Whether ``key`` names ``relative`` without loss (no other path gives it)."""
    parts = relative.split("/")
    return (
        all(_PLAIN_PART.fullmatch(p) and p not in (".", "..") for p in parts)
        and not relative.startswith(".")
        and key == "__".join(parts)
        and len(key) <= MAX_KEY_BYTES
        and key not in _RESERVED
        and not _HASHED_END.search(key)
    )


def with_hash(key: str, text: str) -> str:
    """``key`` cut to fit, then ``-`` and the hash of ``text``: at most :data:`MAX_KEY_BYTES`."""
    return f"{key[: MAX_KEY_BYTES - HASH_CHARS - 1]}-{_digest(text)}"


def slide_key(relative: str) -> str:
    """Group name for a slide: its relative path, made one safe name (see the module).

    ``"run1/f.jpg"`` becomes ``"run1__f.jpg"``; ``"run 1/field#3.jpg"`` becomes
    ``"run_1__field_3.jpg-<10 hex>"``. Keys never contain ``/``, never start with a
    dot, are at most :data:`MAX_KEY_BYTES` long and differ for different paths.
    """
    key = _sanitised(relative)
    return key if _is_plain(relative, key) else with_hash(key, relative)


def unique_keys(relatives: Iterable[str], paths: Sequence[str | Path] | None = None) -> list[str]:
    """:func:`slide_key` for each path; one relative path given twice gets distinct keys.

    Args:
        relatives: The slides' relative paths, in batch order.
        paths: Their absolute paths: a repeated relative path is then named by the
            hash of its absolute path (the same in every run over those folders);
            without them it is suffixed ``-2``, ``-3``...

    Returns:
        One key per slide, no two alike.
    """
    relatives = list(relatives)
    taken: set[str] = set()
    keys = []
    for i, rel in enumerate(relatives):
        key = slide_key(rel)
        if key in taken and paths is not None:
            key = with_hash(key, str(Path(paths[i]).absolute()))
        base, n = key, 1
        while key in taken:  # no absolute paths, or (astronomically rare) equal hashes
            n += 1
            key = f"{base[: MAX_KEY_BYTES - len(str(n)) - 1]}-{n}"
        taken.add(key)
        keys.append(key)
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
