"""sha256 digests of weights files and their ``NAME.pt.sha256`` sidecars.

Kept apart from :mod:`smearscan.checkpoint` (which needs torch) so that a run
can record and compare the digests of its models without importing torch:
a nightly re-run over slides already done never loads a network.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from smearscan.atomic import atomic_write
from smearscan.errors import ModelError

#: Suffix of the digest file written beside a checkpoint (``NAME.pt.sha256``).
SIDECAR_SUFFIX = ".sha256"

_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _require_file(path: Path) -> None:
    """ModelError unless ``path`` is an existing file."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise ModelError(f"{path}: model checkpoint {what}")


def sidecar_path(path: str | Path) -> Path:
    """The digest file of checkpoint ``path``: ``NAME.pt`` -> ``NAME.pt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the bytes of ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise_digest(value: str, origin: str) -> str:
    """``value`` lower-cased and stripped; ModelError unless it is 64 hex digits."""
    digest = value.strip().lower()
    if not _HEX64.fullmatch(digest):
        raise ModelError(f"{origin}: not a sha256 hex digest: {value.strip()[:80]!r}")
    return digest


def read_sidecar(path: str | Path) -> str:
    """The digest recorded in the sidecar of checkpoint ``path``.

    Raises:
        ModelError: The sidecar is missing or does not hold a sha256 digest.
    """
    sidecar = sidecar_path(path)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(
            f"{path}: sha256 file {sidecar.name} is missing; a model must ship with its "
            "sha256 (pass the expected digest or verify=False to skip the check)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{sidecar}: cannot read sha256 file: {exc}") from None
    first = text.split(maxsplit=1)
    return _normalise_digest(first[0] if first else "", str(sidecar))


def write_sidecar(path: Path, digest: str) -> None:
    """Write ``<digest>  NAME.pt`` atomically beside ``path``."""
    line = f"{digest}  {path.name}\n"
    atomic_write(sidecar_path(path), lambda tmp: tmp.write_text(line, encoding="utf-8"))


def verify_checkpoint(path: str | Path, expected_sha256: str | None = None) -> str:
    """Check the sha256 of ``path`` against ``expected_sha256`` or else its sidecar.

    Returns:
        The file's hex digest.

    Raises:
        ModelError: The file is missing, the sidecar is missing (and no digest was
            given) or the digests differ (the message names the file and both digests).
    """
    path = Path(path)
    _require_file(path)
    if expected_sha256 is not None:
        expected = _normalise_digest(expected_sha256, f"{path}: expected sha256")
        origin = "the expected value"
    else:
        expected = read_sidecar(path)
        origin = sidecar_path(path).name
    actual = file_sha256(path)
    if actual != expected:
        raise ModelError(
            f"{path}: sha256 mismatch, the file is corrupt or was modified: "
            f"{origin} says {expected}, the file has {actual}"
        )
    return actual
