"""Content fingerprints for the run ledger: file identity (size, mtime, sha256), params hash.

Pure functions, no database: :class:`smearscan.ledger.Ledger` adds the cheap
path that reuses a stored sha256 for a file whose size and mtime are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from smearscan.errors import FingerprintTimeoutError, InputError
from smearscan.limits import SlideTimeoutError, check_deadline

HASH_CHUNK_BYTES = 1 << 20  # bytes read per step while hashing a file (1 MiB)
HEAD_BYTES = 1 << 20
"""Bytes of a refused file (:func:`head_identity`) that its fingerprint covers (1 MiB)."""
HEAD_PREFIX = "head:"
"""Prefix of a :func:`head_identity` fingerprint (never equal to a content sha256)."""
_MIB = float(1 << 20)


@dataclass(frozen=True)
class FileIdentity:
    """What identifies the content of one slide file.

    Attributes:
        path: Absolute path (normalised; symlinks not resolved).
        size_bytes: File size in bytes.
        mtime_ns: Modification time in ns since the epoch.
        sha256: Hex sha256 of the content.
        hashed: True when ``sha256`` was computed now by reading the file; False
            when it was reused from the ledger because size and mtime matched.
    """

    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str
    hashed: bool = False


def _json_default(value: object) -> str:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"parameter value {value!r} ({type(value).__name__}) has no JSON form")


def canonical_json(params: Mapping[str, Any]) -> str:
    """``params`` as canonical JSON: sorted keys, no spaces; ``Path``/``datetime`` as strings.

    Raises:
        TypeError: A value has no JSON form.
    """
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"), default=_json_default)


def params_hash(params: Mapping[str, Any]) -> str:
    """Hex sha256 of the UTF-8 :func:`canonical_json` of ``params`` (key order irrelevant)."""
    return hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()


def regular_file_stat(path: str) -> os.stat_result:
    """``os.stat`` of a regular file.

    Raises:
        InputError: Missing, unreadable (dangling link, symlink loop) or not a regular file.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(path, f"cannot be opened: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, "is not a regular file")
    return st


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's content, read in :data:`HASH_CHUNK_BYTES` chunks.

    Inside :func:`smearscan.limits.deadline` (the batch plans each slide under
    ``--slide-timeout``) the deadline is checked after every chunk, so hashing
    a huge file stops once the slide's time is spent.

    Raises:
        InputError: The file cannot be read.
        FingerprintTimeoutError: The deadline passed before the end of the file.
    """
    digest = hashlib.sha256()
    done = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
                done += len(chunk)
                check_deadline("the rest of the file")
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or exc}") from exc
    except SlideTimeoutError as exc:
        size = os.stat(path).st_size
        raise FingerprintTimeoutError(
            path,
            f"sha256 fingerprint not finished: {exc} after reading {done / _MIB:.0f} of "
            f"{size / _MIB:.0f} MiB; not run (raise --slide-timeout to process a file this large)",
        ) from exc
    return digest.hexdigest()


def hash_file(path: str | Path) -> FileIdentity:
    """Identity of a file by reading all of it (``hashed=True``).

    Raises:
        InputError: As :func:`regular_file_stat` and :func:`sha256_file`, or the
            file changed while it was read (still being copied).
    """
    path = os.path.abspath(path)
    before = regular_file_stat(path)
    sha = sha256_file(path)
    after = regular_file_stat(path)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise InputError(path, "changed while it was read (still being copied?); retry later")
    return FileIdentity(path, before.st_size, before.st_mtime_ns, sha, hashed=True)


def head_identity(path: str | Path) -> FileIdentity:
    """Identity of a file refused before hashing, from its first :data:`HEAD_BYTES` only.

    A file whose header is invalid, or which is far larger than the image its
    header claims (:func:`smearscan.image_header.check_header`), is never read
    whole: its fingerprint is ``head:`` + the sha256 of its size, mtime and
    first bytes, so the ledger still records its failure (and a changed file
    is tried again) without the cost of hashing a possibly huge, sparse file.

    Raises:
        InputError: As :func:`regular_file_stat`, or the file cannot be read.
    """
    path = os.path.abspath(path)
    st = regular_file_stat(path)
    digest = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    try:
        with open(path, "rb") as fh:
            digest.update(fh.read(HEAD_BYTES))
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or exc}") from exc
    return FileIdentity(path, st.st_size, st.st_mtime_ns, HEAD_PREFIX + digest.hexdigest(), True)
