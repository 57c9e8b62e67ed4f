"""Hostile inputs (issue #6, item 5): a generated corpus of bad, odd and dangerous files.

Every hostile file must give exactly one ``Errors`` row naming it with a
readable reason (no traceback), convertible ones must be processed with a
note, the good fields must be processed, the batch must return, and nothing
may be written outside the test's temporary directory.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import openpyxl
import pandas as pd
import pytest
import tifffile
from PIL import Image

from smearscan.config import ProcessConfig
from smearscan.errors import CorruptImageError, ImageTooLargeError, InputError, OutputPathError
from smearscan.image_decode import cmyk_to_rgb
from smearscan.input_checks import check_pixel_limit
from smearscan.pipeline import process_batch, process_slide
from smearscan.review import preview_names
from smearscan.slide_io import list_inputs, open_slide
from smearscan.synth import generate_field, write_field
from smearscan.zarr_store import check_key, discard_slide_store, slide_key, unique_keys

PIXEL_SIZE_UM = 0.1
METACHAR_NAME = "$(rm -rf x);'\"`.jpg"
FORMULA_NAME = '=HYPERLINK("x")+1.png'  # must stay text in the xlsx, never a formula


# ----------------------------------------------------------------------------- crafted headers


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with a valid CRC."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-CRC PNG whose IHDR claims ``width`` x ``height`` RGB, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bomb(image: npt.NDArray[np.uint8], side: int = 65_000) -> bytes:
    """A real JPEG whose SOF0 marker is patched to claim ``side`` x ``side`` pixels."""
    data = bytearray(_encode(".jpg", image))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)  # height, width
    return bytes(data)


def tiff_bomb(side: int = 100_000) -> bytes:
    """A classic little-endian TIFF: one 8-bit gray strip of ``side`` x ``side``, no data."""
    entries = [  # (tag, type, value); type 3 SHORT, 4 LONG
        (256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 1), (262, 3, 1),
        (273, 4, 0), (277, 3, 1), (278, 4, side), (279, 4, 0),
    ]  # fmt: skip
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def _encode(suffix: str, image: npt.NDArray[np.uint8]) -> bytes:
    """``image`` (RGB) encoded by OpenCV."""
    ok, buffer = cv2.imencode(suffix, image[..., ::-1])
    assert ok
    return buffer.tobytes()


# ----------------------------------------------------------------------------- the corpus


@pytest.fixture(scope="module")
def field_rgb() -> npt.NDArray[np.uint8]:
    """A small synthetic smear field, (250, 300, 3) uint8 RGB."""
    return generate_field(11, 300, 250, pixel_size_um=PIXEL_SIZE_UM).image


def _hostile_files(root: Path, rgb: npt.NDArray[np.uint8]) -> dict[str, str]:
    """Write every file that must fail; returns {relative name: expected text in the reason}."""
    png = _encode(".png", rgb)
    jpeg = _encode(".jpg", rgb)
    expected: dict[str, str] = {}

    def put(name: str, content: bytes, reason: str) -> None:
        (root / name).write_bytes(content)
        expected[name] = reason

    put("bomb.png", png_bomb(), "10,000,000,000 pixels")
    put("bomb.jpg", jpeg_bomb(rgb), "65000 x 65000")
    put("bomb.tif", tiff_bomb(), "100000 x 100000")
    put("truncated.jpg", jpeg[: len(jpeg) // 2], "JPEG")
    put("truncated.png", png[: len(png) // 2], "PNG")
    tifffile.imwrite(root / "whole.tif", rgb, tile=(64, 64))
    whole = (root / "whole.tif").read_bytes()
    (root / "whole.tif").unlink()
    put("truncated.tif", whole[: len(whole) * 2 // 3], "truncated TIFF")
    corrupt = bytearray(png)
    corrupt[len(png) // 2] ^= 0xFF  # one flipped byte inside IDAT: the CRC no longer matches
    put("corrupt.png", bytes(corrupt), "PNG")
    put("empty.jpg", b"", "empty file")
    put("text.tif", b"slide 12, stained 2026-11-30\n" * 20, "not an image")
    os.mkfifo(root / "pipe.jpg")
    expected["pipe.jpg"] = "named pipe"
    os.symlink(root / "no_such_file.jpg", root / "dangling.jpg")
    expected["dangling.jpg"] = "broken symbolic link"
    os.symlink(root / "loop_b.jpg", root / "loop_a.jpg")
    os.symlink(root / "loop_a.jpg", root / "loop_b.jpg")
    expected["loop_a.jpg"] = expected["loop_b.jpg"] = "symbolic link loop"
    if os.geteuid() != 0:  # root reads anything: chmod 000 would not stop it
        put("unreadable.jpg", jpeg, "permission denied")
        (root / "unreadable.jpg").chmod(0)
    return expected


def _convertible_files(root: Path, rgb: npt.NDArray[np.uint8]) -> dict[str, str]:
    """Write every file that must be read with a conversion; returns {name: expected note}."""
    notes: dict[str, str] = {}
    tifffile.imwrite(root / "sixteen.tif", rgb.astype(np.uint16) * 257)
    notes["sixteen.tif"] = "16-bit"
    tifffile.imwrite(root / "float.tif", rgb.astype(np.float32) / 255, photometric="rgb")
    notes["float.tif"] = "float32"
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(root / "cmyk.jpg", quality=95)
    notes["cmyk.jpg"] = "CMYK"
    tifffile.imwrite(root / "cmyk.tif", np.asarray(cmyk), photometric="separated")
    notes["cmyk.tif"] = "CMYK"
    Image.fromarray(rgb).quantize(64).save(root / "palette.png")
    notes["palette.png"] = "palette"
    (root / "really_png.jpg").write_bytes(_encode(".png", rgb))
    notes["really_png.jpg"] = "content is PNG"
    return notes


def _good_fields(root: Path) -> list[str]:
    """Ordinary synthetic fields, with awkward but harmless names."""
    names = ["a b.jpg", "ünïcødé.png", METACHAR_NAME, FORMULA_NAME]
    for seed, name in enumerate(names):
        field = generate_field(seed, 600, 500, pixel_size_um=PIXEL_SIZE_UM)
        write_field(field, root / name)
    return names


def _listing(directory: Path) -> set[str]:
    return {entry.name for entry in os.scandir(directory)}


@pytest.fixture
def guarded_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in ``tmp_path/cwd``; fail if anything appears beside ``tmp_path`` or in the old cwd."""
    old_cwd = Path.cwd()
    before_parent, before_cwd = _listing(tmp_path.parent), _listing(old_cwd)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work
    assert _listing(tmp_path.parent) - before_parent <= {tmp_path.name}
    assert _listing(old_cwd) == before_cwd
    assert not any(work.iterdir())


def _config() -> ProcessConfig:
    return ProcessConfig(model="classical").with_overrides(
        classify={"classifier": "rules"}, scale={"pixel_size_um": PIXEL_SIZE_UM}
    )


# ----------------------------------------------------------------------------- the batch


def test_hostile_corpus_batch(tmp_path: Path, guarded_cwd: Path, field_rgb) -> None:
    root = tmp_path / "night"
    root.mkdir()
    hostile = _hostile_files(root, field_rgb)
    convertible = _convertible_files(root, field_rgb)
    good = _good_fields(root)
    (root / "one_pixel.png").write_bytes(_encode(".png", field_rgb[:1, :1]))
    (root / "sub").mkdir()
    os.symlink(root, root / "sub" / "parent_loop")  # directory loop: must not recurse forever
    (root / "empty_dir").mkdir()
    (root / "folder.jpg").mkdir()  # a directory named like an image is walked, not opened
    report = tmp_path / "out" / "night.xlsx"

    batch = process_batch([root], report, _config())

    by_name = {r.slide: r for r in batch.results}
    assert set(by_name) == set(hostile) | set(convertible) | set(good) | {"one_pixel.png"}
    errors = pd.read_excel(report, sheet_name="Errors")
    rows = errors.groupby("slide")["message"].apply(list).to_dict()
    for name, reason in hostile.items():
        assert by_name[name].status == "failed", name
        assert len(rows.get(name, [])) == 1, (name, rows.get(name))
        message = rows[name][0]
        assert name in message and reason in message, (name, message)
        assert "Traceback" not in message and 'File "' not in message
    assert by_name["bomb.png"].error_stage == "read"
    assert "limit of 2,500,000,000" in by_name["bomb.png"].error
    for name, note in convertible.items():
        assert by_name[name].status == "ok", (name, by_name[name].error)
        assert any(note in n for n in by_name[name].notes), (name, by_name[name].notes)
    for name in good:
        assert by_name[name].status == "ok", (name, by_name[name].error)
        assert by_name[name].wbc_count is not None
    tiny = by_name["one_pixel.png"]  # nothing to find, but no failure either
    assert tiny.status == "ok" and tiny.wbc_count == 0 and "LOW_WBC_COUNT" in tiny.group_flags
    assert set(rows) == set(hostile)

    zarr_dir, previews = batch.outputs.zarr.resolve(), batch.outputs.previews.resolve()
    for result in batch.results:
        if result.status == "ok":
            assert Path(result.mask_path).resolve().parent == zarr_dir
            assert Path(result.preview_path).resolve().parent == previews
    summary = pd.read_excel(report, sheet_name="Summary")
    assert {METACHAR_NAME, FORMULA_NAME, "ünïcødé.png"} <= set(summary["slide"])
    sheet = openpyxl.load_workbook(report)["Summary"]
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)
    for path in tmp_path.rglob("*"):  # nothing written through a link to outside
        assert not path.is_symlink() or path.parent == root or path.parent == root / "sub"


def test_max_pixels_option_and_pillow_limit(tmp_path: Path, field_rgb) -> None:
    (tmp_path / "field.png").write_bytes(_encode(".png", field_rgb))
    tifffile.imwrite(tmp_path / "field.tif", field_rgb)
    for name in ("field.png", "field.tif"):
        with pytest.raises(ImageTooLargeError, match="300 x 250 = 75,000 pixels") as info:
            open_slide(tmp_path / name, max_pixels=74_999)
        assert str(tmp_path / name) in str(info.value) and "74,999" in str(info.value)
        assert open_slide(tmp_path / name, max_pixels=75_000).width == 300
    (tmp_path / "big.png").write_bytes(png_bomb(20_000, 20_000))  # under 2.5e9, over Pillow's
    with pytest.raises(InputError, match="too large to decode whole"):
        open_slide(tmp_path / "big.png")
    with pytest.raises(CorruptImageError, match="5 x 0"):
        check_pixel_limit(tmp_path / "x.png", "png", 5, 0, None)


def test_max_pixels_config_and_read_stage(tmp_path: Path, field_rgb) -> None:
    tifffile.imwrite(tmp_path / "field.tif", field_rgb)
    config = _config().with_overrides(batch={"max_pixels": 1000.0})
    assert config.batch.max_pixels == 1000
    out = tmp_path / "out" / "r.xlsx"
    batch = process_batch([tmp_path / "field.tif"], out, config)
    (result,) = batch.results
    assert result.status == "failed" and result.error_stage == "read"
    assert "field.tif" in result.error and "limit of 1,000" in result.error


def test_one_pixel_image_without_pixel_size_is_no_smear(tmp_path: Path, field_rgb) -> None:
    """One pixel holds no smear: zero cells and NO_SMEAR (no pixel size needed, none
    estimated), where it used to fail at ``scale`` (too few RBCs to estimate one)."""
    (tmp_path / "dot.png").write_bytes(_encode(".png", field_rgb[:1, :1]))
    config = ProcessConfig(model="classical").with_overrides(classify={"classifier": "rules"})
    batch = process_batch([tmp_path / "dot.png"], tmp_path / "out" / "r.xlsx", config)
    (result,) = batch.results
    assert result.status == "ok" and result.wbc_count == 0, result.error
    assert result.flags == ["NO_SMEAR"] and result.pixel_size_um is None


def test_cmyk_conversion_values() -> None:
    inks = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 255, 255, 0]]], np.uint8)
    assert cmyk_to_rgb(inks).tolist() == [[[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 0, 0]]]


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "relative",
    ["../../etc/passwd", "/abs/x.jpg", "..", "...", "a/../../b.png", "C:\\x\\y.jpg", ".hidden",
     "a\x00b.jpg", "\u202eevil.jpg", "~/x.jpg", "a/./b/../../c.jpg", ""],
)  # fmt: skip
def test_slide_keys_never_leave_the_output(relative: str) -> None:
    key = slide_key(relative)
    assert check_key(key) == key
    assert "/" not in key and "\\" not in key and not key.startswith(".")
    overlay, thumb = preview_names(key)
    assert Path(overlay).parent == Path(".") and Path(thumb).parent.name == "thumbnails"


def test_unsafe_keys_are_refused_and_remove_nothing(tmp_path: Path, field_rgb) -> None:
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    zarr_dir = tmp_path / "out" / "r.zarr"
    zarr_dir.mkdir(parents=True)
    for key in ("../../victim", "../victim", "/tmp", "..", ".", "a/b"):
        with pytest.raises(OutputPathError):
            check_key(key)
        with pytest.raises(OutputPathError):
            preview_names(key)
        discard_slide_store(zarr_dir, key)
    os.symlink(outside, zarr_dir / "linked")  # a group that is a link to elsewhere
    discard_slide_store(zarr_dir, "linked")
    assert (outside / "keep.txt").read_text() == "precious"
    write_field(generate_field(1, 300, 250, pixel_size_um=PIXEL_SIZE_UM), tmp_path / "f.png")
    with pytest.raises(Exception, match="would leave the output directory"):
        process_slide(tmp_path / "f.png", _config(), zarr_dir, key="../../victim")
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    keys = unique_keys(["../x.jpg", "x.jpg", "/x.jpg"])
    assert len(set(keys)) == 3 and keys[1] == "x.jpg"  # distinct, the plain name kept
    assert all("/" not in k and not k.startswith(".") for k in keys)


def test_list_inputs_reports_special_entries(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "deep").mkdir(parents=True)
    (root / "ok.jpg").write_bytes(b"x")
    os.symlink(root, root / "deep" / "up")
    os.symlink(tmp_path / "gone.jpg", root / "dangling.jpg")
    os.mkfifo(root / "fifo.png")
    found = [s.relative for s in list_inputs([root])]
    assert found == ["dangling.jpg", "fifo.png", "ok.jpg"]
    with pytest.raises(InputError, match="named pipe"):
        open_slide(root / "fifo.png")  # refused without opening (which would block)
    with pytest.raises(InputError, match="broken symbolic link"):
        open_slide(root / "dangling.jpg")
    assert [s.relative for s in list_inputs([root / "fifo.png"])] == ["fifo.png"]


def test_empty_directory_exit_4(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from smearscan.cli import app

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sub").mkdir()
    out = tmp_path / "r.xlsx"
    result = CliRunner().invoke(app, ["process", str(tmp_path / "empty"), "--out", str(out), "-q"])
    assert result.exit_code == 4
    result = CliRunner().invoke(
        app, ["process", str(tmp_path / "empty"), "--out", str(out), "--max-pixels", "0"]
    )
    assert result.exit_code == 2


def test_image_size_read_from_header_only(tmp_path: Path) -> None:
    """The bombs are refused from their few-hundred-byte headers, nothing decoded."""
    rgb = np.zeros((8, 8, 3), np.uint8)
    bmp = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, 100_000, 100_000, 1, 24, 0, 0, 2835, 2835, 0, 0
    )
    bombs = [
        ("b.png", png_bomb()),
        ("b.jpg", jpeg_bomb(rgb)),
        ("b.tif", tiff_bomb()),
        ("b.bmp", bmp),
    ]
    for name, content in bombs:
        (tmp_path / name).write_bytes(content)
        assert (tmp_path / name).stat().st_size < 2000
        with pytest.raises(ImageTooLargeError, match="decompression bomb"):
            open_slide(tmp_path / name)
    with Image.open(io.BytesIO(_encode(".png", rgb))) as image:
        assert image.size == (8, 8)


def _without_file_permission_override() -> None:
    """In a child about to exec as root: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    from the capability bounding set, so that root obeys file modes like anyone else."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH (linux/capability.h)
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_file_gets_an_errors_row(tmp_path: Path, field_rgb) -> None:
    """A file the run may not read (mode 000) is one ``Errors`` row; the batch goes on.

    Root reads any file, so as root the run is started without the capabilities
    that let it ignore file modes.
    """
    import subprocess
    import sys

    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("good.png", "unreadable.png"):
        cv2.imwrite(str(slides / name), cv2.cvtColor(field_rgb, cv2.COLOR_RGB2BGR))
    (slides / "unreadable.png").chmod(0)
    report = tmp_path / "out" / "r.xlsx"
    command = [
        sys.executable, "-m", "smearscan", "process", str(slides), "--out", str(report),
        "--model", "classical", "--classifier", "rules", "--pixel-size", "0.1",
        "--no-previews", "--quiet",
    ]  # fmt: skip
    as_root = os.geteuid() == 0
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=_without_file_permission_override if as_root else None,
        )
    except subprocess.SubprocessError as exc:  # no CAP_SETPCAP to drop them with
        pytest.skip(f"cannot start a run that obeys file modes as root: {exc}")
    assert done.returncode == 1, done.stderr
    errors = pd.read_excel(report, sheet_name="Errors")
    assert errors["slide"].tolist() == ["unreadable.png"]
    assert "permission denied" in " ".join(errors.astype(str).values.ravel()).lower()
    summary = pd.read_excel(report, sheet_name="Summary").set_index("slide")
    assert summary.loc["good.png", "status"] == "ok"


def test_outputs_inside_the_input_folder_are_never_slides(tmp_path: Path, field_rgb) -> None:
    """A report written into the folder it reads: its own outputs (lock, log, previews,
    ledger with its WAL files) and an earlier run's review folder are not taken for slides."""
    folder = tmp_path / "slides"
    folder.mkdir()
    cv2.imwrite(str(folder / "field.png"), cv2.cvtColor(field_rgb, cv2.COLOR_RGB2BGR))
    config = ProcessConfig(model="classical").with_overrides(
        classify={"classifier": "rules"}, scale={"pixel_size_um": PIXEL_SIZE_UM}
    )
    first = process_batch([folder], folder / "night1.xlsx", config)
    assert [r.slide for r in first.results] == ["field.png"]
    (folder / "night1.lock").write_text("held by nobody")  # as a killed run would leave it
    for report in (folder / "night1.xlsx", folder / "sub" / "night2.xlsx"):
        again = process_batch([folder], report, config.with_overrides(batch={"force": True}))
        assert [r.slide for r in again.results] == ["field.png"], [r.slide for r in again.results]
        assert again.failed == []
    assert (folder / "night1_previews" / "index.html").is_file()
    assert list(folder.glob("night1_ledger.sqlite*"))
