"""Atomic writes: names up to 255 bytes, the umask's mode, temporary files that never stay."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from smearscan import atomic
from smearscan.atomic import atomic_write


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    "name",
    [
        "a" * 251 + ".png",  # 255 bytes, the longest name of ext4/xfs/tmpfs
        "é" * 125 + ".xlsx",  # 255 bytes of two-byte characters
        "b" * 255,  # no suffix
        "c." + "x" * 253,  # a "suffix" of 254 bytes
    ],
)
def test_atomic_write_of_a_255_byte_name(tmp_path: Path, name: str):
    assert len(os.fsencode(name)) == 255
    seen: list[str] = []

    def write(tmp: Path) -> None:
        seen.append(tmp.name)
        tmp.write_bytes(b"data")

    out = atomic_write(tmp_path / name, write)
    assert out.read_bytes() == b"data"
    assert os.listdir(tmp_path) == [name]
    (temp,) = seen
    assert temp.startswith(".") and len(os.fsencode(temp)) <= 255
    temp.encode("utf-8")  # never cut in the middle of a character


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_write_gives_the_mode_of_the_umask(tmp_path: Path, umask: int):
    old = os.umask(umask)
    try:
        out = atomic_write(tmp_path / "r.xlsx", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(old)
    assert _mode(out) == 0o666 & ~umask


def test_a_second_signal_mid_write_removes_the_temporary_file(tmp_path: Path):
    """What the stop handler calls before the process dies: the file being written goes."""
    seen: list[bool] = []

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        atomic.remove_temps_in_progress()
        seen.append(tmp.exists())
        raise KeyboardInterrupt  # the process would be dead by now

    keep = tmp_path / ".q-keepmine.xlsx"  # the pattern of a file not being written: stays
    keep.write_bytes(b"")
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "r.xlsx", write)
    assert seen == [False]
    assert sorted(os.listdir(tmp_path)) == [".q-keepmine.xlsx"]
    atomic.remove_temps_in_progress()  # nothing in progress now: nothing removed
    assert keep.exists()


def test_stale_temporary_files_are_recognised_by_their_exact_pattern(tmp_path: Path):
    long_name = "a" * 251 + ".png"
    prefix, suffix = atomic.temp_affixes(tmp_path / long_name)
    stale = [".r-abcd_123.xlsx", prefix + "zz99__aa" + suffix]
    kept = [
        "r.xlsx",
        ".r-abc.xlsx",  # not 8 random characters
        ".r-abcd_123.xlsx.bak",
        ".rx-abcd_123.xlsx",  # another file's temporary name
        ".r-ABCD_123.xlsx",  # mkstemp never uses capitals
        "notes-abcd_123.xlsx",  # not hidden
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".r-dir_0000.xlsx").mkdir()  # a folder is never ours
    removed = atomic.remove_stale_temps(tmp_path / "r.xlsx")
    removed += atomic.remove_stale_temps(tmp_path / long_name)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, ".r-dir_0000.xlsx"])

    folder = tmp_path / "previews"
    folder.mkdir()
    for name in (".a.png-x1y2z3w4.png", ".index-x1y2z3w4.html", "a.png.png", ".a-short.png"):
        (folder / name).write_bytes(b"")
    assert [p.name for p in atomic.remove_stale_temps_in(folder, ".png")] == [".a.png-x1y2z3w4.png"]
    assert sorted(os.listdir(folder)) == [".a-short.png", ".index-x1y2z3w4.html", "a.png.png"]
