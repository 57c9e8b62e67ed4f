"""Tests of smearscan.slide_io: formats, conversions, laziness, regions, errors, inputs."""

from __future__ import annotations

import os
import pickle
import threading
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from PIL import Image

from smearscan import image_decode
from smearscan.errors import CorruptImageError, InputError, UnsupportedFormatError
from smearscan.slide_io import (
    SUPPORTED_FORMATS,
    Slide,
    SlideSource,
    list_inputs,
    open_slide,
    read_region,
)

RNG = np.random.default_rng(7)


def _rgb(height: int = 120, width: int = 160) -> npt.NDArray[np.uint8]:
    """Deterministic RGB test pattern, (height, width, 3) uint8."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 3) % 256, (y * 5) % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def _open(path: Path) -> tuple[Slide, npt.NDArray[np.uint8]]:
    slide = open_slide(path)
    return slide, np.asarray(slide.array.compute())


# ----------------------------------------------------------------------------- raster formats


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".jpg"])
def test_raster_round_trip_and_channel_order(tmp_path: Path, suffix: str) -> None:
    image = _rgb()
    image[10:40, 10:40] = (255, 0, 0)  # a red square, written in BGR by OpenCV
    path = tmp_path / f"field{suffix}"
    assert cv2.imwrite(str(path), image[..., ::-1])
    slide, data = _open(path)
    assert slide.format == {".png": "png", ".bmp": "bmp", ".jpg": "jpeg"}[suffix]
    assert (slide.height, slide.width) == (120, 160)
    assert data.shape == (120, 160, 3) and data.dtype == np.uint8
    assert slide.array.dtype == np.uint8 and slide.levels == 1 and slide.notes == []
    red = data[15:35, 15:35].reshape(-1, 3).mean(axis=0)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
    if suffix == ".jpg":
        assert np.abs(data.astype(int) - image).mean() < 6
    else:
        np.testing.assert_array_equal(data, image)


def test_format_from_magic_bytes_not_extension(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    cv2.imwrite(str(tmp_path / "x.png"), _rgb()[..., ::-1])
    path.write_bytes((tmp_path / "x.png").read_bytes())
    slide, data = _open(path)
    assert slide.format == "png"
    np.testing.assert_array_equal(data, _rgb())
    assert set(SUPPORTED_FORMATS) == {"jpeg", "png", "bmp", "tiff"}


def test_grayscale_png(tmp_path: Path) -> None:
    gray = _rgb()[..., 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    slide, data = _open(tmp_path / "g.png")
    np.testing.assert_array_equal(data, np.repeat(gray[..., None], 3, axis=-1))
    assert "grayscale replicated to RGB" in slide.notes


def test_rgba_png_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = (200, 10, 50)
    rgba[:, :10, 3] = 255
    rgba[:, 10:20, 3] = 0
    rgba[:, 20:, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    slide, data = _open(tmp_path / "a.png")
    assert "alpha composited on white" in slide.notes
    np.testing.assert_array_equal(data[0, 0], (200, 10, 50))
    np.testing.assert_array_equal(data[0, 15], (255, 255, 255))
    np.testing.assert_allclose(data[0, 25], (228, 132, 152), atol=1)


def test_palette_png(tmp_path: Path) -> None:
    image = Image.new("P", (16, 8))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    image.paste(1, (0, 0, 8, 8))
    image.paste(2, (8, 0, 16, 8))
    image.save(tmp_path / "p.png")
    slide, data = _open(tmp_path / "p.png")
    assert "palette expanded to RGB" in slide.notes
    np.testing.assert_array_equal(data[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(data[0, 12], (0, 0, 255))


def test_16bit_png(tmp_path: Path) -> None:
    rgb16 = (_rgb().astype(np.uint16) * 257)[:, :, :]
    rgb16[0, 0] = (65535, 0, 32896)
    cv2.imwrite(str(tmp_path / "d.png"), rgb16[..., ::-1])
    slide, data = _open(tmp_path / "d.png")
    assert "16-bit scaled to 8-bit" in slide.notes
    np.testing.assert_array_equal(data[1:], _rgb()[1:])
    np.testing.assert_array_equal(data[0, 0], (255, 0, 128))


def test_jpeg_dpi_defaults_give_no_pixel_size(tmp_path: Path) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.jpg", dpi=(72, 72))
    Image.fromarray(_rgb()).save(tmp_path / "b.png", dpi=(96, 96))
    assert open_slide(tmp_path / "a.jpg").pixel_size_um is None
    assert open_slide(tmp_path / "b.png").pixel_size_um is None


# ----------------------------------------------------------------------------- TIFF


def test_16bit_and_float_tiff(tmp_path: Path) -> None:
    data16 = _rgb().astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "a.tif", data16, photometric="rgb", tile=(64, 64))
    slide, data = _open(tmp_path / "a.tif")
    assert "16-bit scaled to 8-bit" in slide.notes
    np.testing.assert_array_equal(data, _rgb())
    tifffile.imwrite(tmp_path / "f.tif", _rgb()[..., 0].astype(np.float32) / 255.0)
    slide, data = _open(tmp_path / "f.tif")
    assert any("float32" in note for note in slide.notes)
    np.testing.assert_array_equal(data[..., 1], _rgb()[..., 0])


def test_planar_palette_and_miniswhite_tiff(tmp_path: Path) -> None:
    image = _rgb()
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(image, -1, 0), photometric="rgb")
    np.testing.assert_array_equal(_open(tmp_path / "planar.tif")[1], image)
    colormap = np.zeros((3, 256), np.uint16)
    colormap[0, 1] = 65535
    colormap[2, 2] = 65535
    index = np.zeros((10, 10), np.uint8)
    index[:, 5:] = 2
    index[0, 0] = 1
    tifffile.imwrite(tmp_path / "pal.tif", index, photometric="palette", colormap=colormap)
    slide, data = _open(tmp_path / "pal.tif")
    assert slide.notes == ["palette expanded to RGB"]
    np.testing.assert_array_equal(data[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(data[5, 7], (0, 0, 255))
    tifffile.imwrite(tmp_path / "w.tif", image[..., 0], photometric="miniswhite")
    slide, data = _open(tmp_path / "w.tif")
    assert "min-is-white inverted" in slide.notes
    np.testing.assert_array_equal(data[..., 2], 255 - image[..., 0])


def test_tiled_tiff_lazy_region_and_pixel_size(tmp_path: Path) -> None:
    image = _rgb(700, 900)
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(
        path, image, tile=(256, 256), compression="zlib", resolution=(40000, 40000),
        resolutionunit="CENTIMETER",
    )  # fmt: skip
    with open_slide(path) as slide:
        assert slide.format == "tiff" and (slide.height, slide.width) == (700, 900)
        assert slide.pixel_size_um == pytest.approx(0.25)
        np.testing.assert_array_equal(
            read_region(slide, 300, 420, 500, 777), image[300:420, 500:777]
        )
    tifffile.imwrite(tmp_path / "dpi.tif", image, resolution=(300, 300), resolutionunit="INCH")
    assert open_slide(tmp_path / "dpi.tif").pixel_size_um is None


def test_pyramidal_bigtiff_and_ome(tmp_path: Path) -> None:
    image = _rgb(512, 768)
    with tifffile.TiffWriter(tmp_path / "pyr.tif") as writer:
        writer.write(image, subifds=2, tile=(128, 128), photometric="rgb")
        writer.write(image[::2, ::2], subfiletype=1, tile=(128, 128), photometric="rgb")
        writer.write(image[::4, ::4], subfiletype=1, tile=(128, 128), photometric="rgb")
    slide, data = _open(tmp_path / "pyr.tif")
    assert slide.levels == 3 and data.shape == (512, 768, 3)
    np.testing.assert_array_equal(data, image)
    tifffile.imwrite(tmp_path / "big.tif", image, bigtiff=True, tile=(128, 128))
    np.testing.assert_array_equal(_open(tmp_path / "big.tif")[1], image)
    tifffile.imwrite(
        tmp_path / "ome.ome.tif", image, ome=True, photometric="rgb", tile=(128, 128),
        metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm"},
    )  # fmt: skip
    slide, data = _open(tmp_path / "ome.ome.tif")
    assert slide.pixel_size_um == pytest.approx(0.5)
    np.testing.assert_array_equal(data, image)


def test_huge_tiled_tiff_reads_region_without_loading_it(tmp_path: Path) -> None:
    size, tile = 20000, 512
    per_row = -(-size // tile)

    def tiles() -> Iterator[npt.NDArray[np.uint8]]:
        for index in range(per_row * per_row):
            yield np.full((tile, tile, 3), index % 251, np.uint8)

    path = tmp_path / "huge.tif"
    tifffile.imwrite(
        path, tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile),
        compression="zlib", compressionargs={"level": 1}, photometric="rgb", bigtiff=True,
    )  # fmt: skip
    tracemalloc.start()
    try:
        with open_slide(path) as slide:
            region = read_region(slide, 10_100, 10_300, 15_000, 15_400)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (slide.height, slide.width) == (size, size)
    assert peak < 64 * 2**20, (
        f"peak {peak / 2**20:.0f} MiB for a {size**2 * 3 / 2**30:.1f} GiB image"
    )
    rows, cols = np.mgrid[10_100:10_300, 15_000:15_400] // tile
    expected = (rows * per_row + cols) % 251  # value of the tile under each pixel
    np.testing.assert_array_equal(region, np.repeat(expected[..., None], 3, axis=-1))


def test_threaded_compute_and_pickle(tmp_path: Path) -> None:
    image = RNG.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, image, tile=(128, 128), compression="zlib")
    slide = open_slide(path)
    np.testing.assert_array_equal(slide.array.compute(scheduler="threads", num_workers=8), image)

    def window(i: int) -> bool:
        y, x = (i * 97) % 900, (i * 61) % 900
        return bool(
            np.array_equal(
                read_region(slide, y, y + 100, x, x + 100), image[y : y + 100, x : x + 100]
            )
        )

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(window, range(64)))
    clone = pickle.loads(pickle.dumps(slide))
    np.testing.assert_array_equal(clone.array[5:9, 7:11].compute(), image[5:9, 7:11])
    slide.close()
    clone.close()
    slide.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        read_region(slide, 0, 10, 0, 10)
    assert threading.active_count() < 50


# ----------------------------------------------------------------------------- read_region


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "edge", "constant"])
def test_read_region_padding_equals_numpy_pad(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setattr(image_decode, "CHUNK_PIXELS", 64)  # several chunks per axis
    image = _rgb(150, 130)
    tifffile.imwrite(tmp_path / "r.tif", image, tile=(32, 32))
    slide = open_slide(tmp_path / "r.tif")
    assert len(slide.array.chunks[0]) > 1
    pad = 40
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode=mode)  # type: ignore[call-overload]
    for y0, y1, x0, x1 in [(-40, 30, -40, 25), (120, 190, 100, 170), (-40, 190, -40, 170),
                           (-10, 60, 110, 150), (100, 160, -5, 20)]:  # fmt: skip
        got = read_region(slide, y0, y1, x0, x1, pad_mode=mode)
        np.testing.assert_array_equal(got, padded[y0 + pad : y1 + pad, x0 + pad : x1 + pad])


def test_read_region_tiny_image_and_bad_arguments(tmp_path: Path) -> None:
    image = _rgb(5, 7)
    cv2.imwrite(str(tmp_path / "s.png"), image[..., ::-1])
    slide = open_slide(tmp_path / "s.png")
    got = read_region(slide, -20, 25, -30, 37)
    np.testing.assert_array_equal(got, np.pad(image, ((20, 20), (30, 30), (0, 0)), mode="reflect"))
    with pytest.raises(ValueError):
        read_region(slide, 3, 3, 0, 2)
    with pytest.raises(ValueError):
        read_region(slide, 0, 2, 0, 2, pad_mode="wrap")


# ----------------------------------------------------------------------------- errors


def _encoded(ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize(
    ("name", "content", "error", "text"),
    [
        ("empty.jpg", b"", CorruptImageError, "empty file (0 bytes)"),
        ("cut.jpg", _encoded(".jpg")[:3000], CorruptImageError, "JPEG"),
        ("cut.png", _encoded(".png")[:5000], CorruptImageError, "PNG"),
        ("noend.png", _encoded(".png")[:-12], CorruptImageError, "PNG"),
        ("cut.bmp", _encoded(".bmp")[:5000], CorruptImageError, "BMP"),
        ("text.png", b"sample notes, not pixels\n" * 10, UnsupportedFormatError, "not an image"),
        ("data.bin", bytes(RNG.integers(0, 256, 600, dtype=np.uint8)), UnsupportedFormatError,
         "not an image"),
        ("anim.gif", b"GIF89a" + bytes(50), UnsupportedFormatError, "GIF"),
    ],
)  # fmt: skip
def test_bad_files_raise_specific_errors(
    tmp_path: Path, name: str, content: bytes, error: type[Exception], text: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error) as info:
        open_slide(path)
    assert str(path) in str(info.value) and text in str(info.value)


def test_truncated_tiff(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, RNG.integers(0, 256, (512, 512, 3), dtype=np.uint8), tile=(64, 64))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) * 2 // 3])
    with pytest.raises(CorruptImageError, match="truncated TIFF"):
        open_slide(path)
    path.write_bytes(content[:40])
    with pytest.raises(CorruptImageError, match=str(path)):
        open_slide(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        open_slide(tmp_path / "nope.tif")
    with pytest.raises(InputError, match="directory"):
        open_slide(tmp_path)


# ----------------------------------------------------------------------------- list_inputs


def _touch(path: Path, content: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def test_list_inputs_walks_filters_and_orders(tmp_path: Path) -> None:
    root = tmp_path / "night"
    for name in ["b.jpg", "a/field_1.jpg", "a/field_2.tif", "a/notes.txt", "a/Im001_1.xyc",
                 "a/labels.JSON", ".hidden/x.jpg", ".dot.jpg", "out.zarr/0.jpg", "notes.pdf",
                 "data.bin", "c/d/deep.png"]:  # fmt: skip
        _touch(root / name)
    os.symlink(root, root / "c" / "loop")  # a directory loop must not hang
    os.symlink(root / "a", root / "0_link")  # linked-in subtree: listed under its real path
    found = list_inputs([root])
    assert [s.relative for s in found] == [
        "a/field_1.jpg", "a/field_2.tif", "b.jpg", "c/d/deep.png", "data.bin", "notes.pdf",
    ]  # fmt: skip
    assert all(isinstance(s, SlideSource) and s.path.is_absolute() for s in found)
    assert found[0].path == (root / "a" / "field_1.jpg").absolute()
    assert [s.relative for s in list_inputs([root], ["*.TIF"])] == ["a/field_2.tif"]
    assert [s.relative for s in list_inputs([root], ["**/field_*.jpg", "*.pdf"])] == [
        "a/field_1.jpg", "notes.pdf",
    ]  # fmt: skip
    assert [s.relative for s in list_inputs([root], ["*.xyc"])] == ["a/Im001_1.xyc"]


def test_list_inputs_order_dedup_files_and_errors(tmp_path: Path) -> None:
    for name in ["one/z.jpg", "one/a.jpg", "two/m.png"]:
        _touch(tmp_path / name)
    found = list_inputs([tmp_path / "two", tmp_path / "one", tmp_path / "one" / "a.jpg"])
    assert [s.relative for s in found] == ["m.png", "a.jpg", "z.jpg"]
    direct = list_inputs([tmp_path / "one" / "z.jpg"])
    assert direct == [SlideSource((tmp_path / "one" / "z.jpg").absolute(), "z.jpg")]
    (tmp_path / "empty").mkdir()
    assert list_inputs([tmp_path / "empty"]) == []
    with pytest.raises(InputError, match="not found"):
        list_inputs([tmp_path / "missing"])
