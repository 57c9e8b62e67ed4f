"""Which camera took a slide: header facts, camera profiles and camera signatures.

:func:`read_camera_info` reads the stored size and EXIF/TIFF ``Make``/``Model``
without decoding a pixel; :func:`match_profile` finds the first
``[[scale.cameras]]`` profile whose rules all match; :func:`camera_signature`
names "the same camera" for slides without one; :func:`profile_snippet` writes
profiles as TOML. Globs are fnmatch-style, anchored and case-sensitive: ``*``
and ``?`` stay in one path component, ``**`` crosses folders (``a/**/b`` also
matches ``a/b``), ``[...]`` is a class.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

import tifffile
from PIL import Image

from smearscan.config import CameraProfile, CameraProfileError
from smearscan.errors import CorruptImageError
from smearscan.image_header import check_header
from smearscan.input_checks import HEADER_ERRORS, HEADER_READERS

logger = logging.getLogger(__name__)

MAKE_TAG = 0x010F  #: EXIF / TIFF tag ``Make`` (271): the camera's manufacturer.
MODEL_TAG = 0x0110  #: EXIF / TIFF tag ``Model`` (272): the camera's model name.

_TIFF_ERRORS: tuple[type[Exception], ...] = (tifffile.TiffFileError, IndexError, *HEADER_ERRORS)
_GLOB_TOKEN = re.compile(r"\*\*/|\*\*|\*|\?|\[!?.[^]]*\]")


@dataclass(frozen=True)
class CameraInfo:
    """What identifies the camera of one slide.

    Attributes:
        relative: The slide's path relative to its input folder (posix).
        path: The slide's absolute path.
        width: Image width as stored in the file (before EXIF orientation), pixels.
        height: Image height as stored in the file, pixels.
        make: EXIF/TIFF ``Make`` tag, stripped; ``""`` when absent.
        model: EXIF/TIFF ``Model`` tag, stripped; ``""`` when absent.
    """

    relative: str
    path: Path
    width: int
    height: int
    make: str
    model: str


def read_camera_info(path: Path, relative: str) -> CameraInfo:
    """Level-0 size as stored and ``Make``/``Model`` (EXIF IFD 0, a TIFF's first page) of
    the image at absolute ``path``, whose posix path in its input folder is ``relative``.

    No pixel is decoded; an unreadable EXIF block is logged and counts as no tags.

    Raises:
        InputError: Not a readable regular file, not a supported format
            (:class:`~smearscan.errors.UnsupportedFormatError`), or an unreadable
            header or TIFF tags (:class:`~smearscan.errors.CorruptImageError`).
    """
    header = check_header(path, None)
    if header.format == "tiff":
        make, model = _tiff_tags(path)
    else:
        make, model = _exif_tags(path, header.format)
    return CameraInfo(relative, path, header.width, header.height, make, model)


def _text(value: object) -> str:
    """A tag value as stripped text (ASCII tags may come as bytes with trailing NULs)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value.replace("\x00", " ").strip() if isinstance(value, str) else ""


def _tiff_tags(path: Path) -> tuple[str, str]:
    """``(make, model)`` of a TIFF's first page (only its IFD is read)."""
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            make, model = (tags.get(key) for key in (MAKE_TAG, MODEL_TAG))
            return _text(make and make.value), _text(model and model.value)
    except _TIFF_ERRORS as exc:
        raise CorruptImageError(path, f"cannot read TIFF tags: {exc}") from exc


def _exif_tags(path: Path, fmt: str) -> tuple[str, str]:
    """``(make, model)`` in a JPEG/PNG/BMP header's EXIF (``getexif()`` may decode a PNG)."""
    try:
        with path.open("rb") as fh:
            image = HEADER_READERS[fmt](fh)
            try:
                raw = image.info.get("exif")
            finally:
                image.close()
    except HEADER_ERRORS as exc:
        raise CorruptImageError(path, f"cannot read {fmt.upper()} header: {exc}") from exc
    if not isinstance(raw, bytes | bytearray) or not raw:
        return "", ""
    try:
        (exif := Image.Exif()).load(bytes(raw))
        return _text(exif.get(MAKE_TAG)), _text(exif.get(MODEL_TAG))
    except HEADER_ERRORS as exc:
        logger.warning("%s: unreadable EXIF block (%s); camera make/model unknown", path, exc)
        return "", ""


def match_profile(profiles: Sequence[CameraProfile], info: CameraInfo) -> CameraProfile | None:
    """The first profile (in file order) whose rules all match the slide, or None."""
    return next((p for p in profiles if profile_matches(p, info)), None)


def profile_matches(profile: CameraProfile, info: CameraInfo) -> bool:
    """Whether every rule of ``profile`` holds: the stored size; the glob on the relative or
    absolute path; make and model case-insensitive and stripped (absent never matches)."""
    size = profile.width is None or (profile.width, profile.height) == (info.width, info.height)
    paths = (info.relative, info.path.as_posix())
    glob = profile.glob is None or any(glob_matches(profile.glob, p) for p in paths)
    tags = ((profile.make, info.make), (profile.model, info.model))
    same = all(w is None or w.strip().casefold() == f.strip().casefold() for w, f in tags)
    return size and glob and same


def glob_matches(pattern: str, path: str) -> bool:
    """Whether the posix ``path`` matches the glob ``pattern`` whole (see the module doc)."""
    return _glob_regex(pattern).fullmatch(path) is not None


@cache
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression of a glob: ``**/`` any folders, ``**`` anything, ``*`` and
    ``?`` within one component, ``[...]`` (``[!...]`` negated) a class."""
    fixed = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    out, end = [], 0
    for token in _GLOB_TOKEN.finditer(pattern):
        out.append(re.escape(pattern[end : token.start()]))
        text, end = token.group(), token.end()
        if text in fixed:
            out.append(fixed[text])
        else:
            negate = text.startswith("[!")
            body = re.escape(text[2 if negate else 1 : -1]).replace("\\-", "-")
            out.append(f"[^/{body}]" if negate else f"[{body}]")
    return re.compile("".join(out) + re.escape(pattern[end:]))


def camera_signature(info: CameraInfo, folder: str) -> str:
    """Stable text naming "the same camera" for slides without a profile.

    ``"640x480 | Canon EOS 5D | in/ward3"``: the stored size in pixels, make and
    model (the make once when the model repeats it) and ``folder``, the slide's
    input folder (the file's parent, posix), each left out when empty.
    """
    make, model = " ".join(info.make.split()), " ".join(info.model.split())
    if make and model.casefold().startswith(make.casefold()):
        make = ""
    place = PurePosixPath(folder).as_posix() if folder else ""
    camera = " ".join(part for part in (make, model) if part)
    parts = [f"{info.width}x{info.height}", camera, "" if place == "." else place]
    return " | ".join(part for part in parts if part)


def profile_snippet(entries: Sequence[tuple[str, float, CameraInfo]]) -> str:
    """TOML ``[[scale.cameras]]`` tables, one per ``(name, pixel_size_um, info)`` entry.

    Each has ``name``, ``pixel_size_um`` (µm/px, 4 significant digits), ``width``,
    ``height``, ``make``/``model`` when known, and a ``glob`` on the folder of
    ``info`` (one slide of the camera) when the other rules would also match
    another entry (same size and make/model, or fewer tags known). Entries with
    more tags come first, so each entry's slides match their own table;
    repeated names get ``-2``, ``-3``... suffixes.

    An entry whose pixel size is outside 0.01-10 µm/px is left out (logged).
    """
    ordered = sorted(entries, key=lambda e: -(bool(e[2].make) + bool(e[2].model)))
    every = [info for _, _, info in ordered]  # left-out cameras' slides must not match either
    names = _unique_names([name for name, _, _ in ordered])
    bare = [(_bare(n, size, i), i) for n, (_, size, i) in zip(names, ordered, strict=True)]
    kept = [(p, i) for p, i in bare if p is not None]
    profiles = [
        dataclasses.replace(p, glob=_folder_glob(i, every))
        if any(profile_matches(p, other) for other in every if other is not i)
        else p
        for p, i in kept
    ]
    for profile, (_, info) in zip(profiles, kept, strict=True):
        if (found := match_profile(profiles, info)) is not profile:
            logger.warning(
                "camera %r cannot be told apart from camera %r (same size, make, model and "
                "folder); its slides match that one", profile.name, found and found.name,
            )  # fmt: skip
    return "\n".join(_table(p, i) for p, (_, i) in zip(profiles, kept, strict=True))


def _bare(name: str, pixel_size_um: float, info: CameraInfo) -> CameraProfile | None:
    """The profile of size, make and model at 4 significant digits; None (logged) if invalid."""
    tags = {"make": info.make or None, "model": info.model or None}
    try:
        return CameraProfile(name, float(f"{pixel_size_um:.4g}"), info.width, info.height, **tags)
    except CameraProfileError as exc:
        logger.warning("camera %r left out of the profiles: %s", name, exc.reason)
        return None


def _unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with blanks named ``camera`` and repeats suffixed ``-2``, ``-3``..."""
    out: list[str] = []
    for raw in names:
        base, n = raw.strip() or "camera", 1
        while (name := base if n == 1 else f"{base}-{n}").casefold() in map(str.casefold, out):
            n += 1
        out.append(name)
    return out


def _folder_glob(info: CameraInfo, infos: Sequence[CameraInfo]) -> str:
    """A glob matching the files of ``info``'s folder only: on the relative folder, or
    on the absolute folder when a slide of another folder has the same relative one."""
    relative = PurePosixPath(info.relative).parent.as_posix()
    same = {o.path.parent for o in infos if PurePosixPath(o.relative).parent.as_posix() == relative}
    base = info.path.parent.as_posix() if len(same) > 1 else relative
    escaped = re.sub(r"([*?\[])", r"[\1]", base)  # the folder's name as a glob of itself
    return "*" if base == "." else f"{escaped}/*"


def _table(profile: CameraProfile, info: CameraInfo) -> str:
    """One ``[[scale.cameras]]`` table, with the slide's signature as a comment."""
    signature = camera_signature(info, info.path.parent.as_posix())
    lines = ["# " + "".join(c if c.isprintable() else "?" for c in signature), "[[scale.cameras]]"]
    for key in ("name", "pixel_size_um", "width", "height", "glob", "make", "model"):
        if (value := getattr(profile, key)) is not None:
            # JSON's strings, integers and floats are TOML's; DEL must be escaped in TOML
            lines.append(
                f"{key} = " + json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
            )
    return "\n".join(lines) + "\n"
