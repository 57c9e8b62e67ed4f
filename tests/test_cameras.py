"""Camera profiles (issue #14, point 1): header facts read without decoding, first-match
profiles, camera signatures, the ``[[scale.cameras]]`` schema and the TOML snippet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from smearscan.cameras import (
    CameraInfo,
    camera_signature,
    glob_matches,
    match_profile,
    profile_snippet,
    read_camera_info,
)
from smearscan.cli import app
from smearscan.config import CameraProfile, ProcessConfig, ScaleConfig, load_config
from smearscan.errors import ConfigError, InputError, UnsupportedFormatError

MAKE, MODEL, ORIENTATION = 0x010F, 0x0110, 0x0112


def _pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _jpeg(path: Path, width: int, height: int, make: str, model: str, **tags: int) -> Path:
    exif = Image.Exif()
    exif[MAKE], exif[MODEL] = make, model
    for tag, value in tags.items():
        exif[int(tag.removeprefix("tag"))] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(width, height)).save(path, "JPEG", exif=exif)
    return path


def _tiff(path: Path, width: int, height: int, make: str, model: str) -> Path:
    tags = [(271, "s", 0, make, True), (272, "s", 0, model, True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, _pixels(width, height), photometric="rgb", extratags=tags)
    return path


def _png(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(width, height)).save(path, "PNG")
    return path


def _info(relative: str, width: int = 640, height: int = 480, make: str = "", model: str = ""):
    return CameraInfo(relative, Path("/data/in") / relative, width, height, make, model)


def _load(tmp_path: Path, text: str) -> ProcessConfig:
    path = tmp_path / "cameras.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


# -- reading the header ------------------------------------------------------------------


def test_jpeg_exif_make_and_model_and_size_as_stored(tmp_path: Path):
    # orientation 6 (rotate 90°) must not swap the stored 64 x 48
    path = _jpeg(tmp_path / "a.jpg", 64, 48, "  Canon\x00", "Canon EOS 5D", tag274=6)
    info = read_camera_info(path, "a.jpg")
    assert (info.width, info.height) == (64, 48)
    assert (info.make, info.model) == ("Canon", "Canon EOS 5D")
    assert info.relative == "a.jpg" and info.path == path


def test_tiff_make_and_model_tags(tmp_path: Path):
    info = read_camera_info(_tiff(tmp_path / "scan.tif", 70, 30, "Olympus", "DP27"), "scan.tif")
    assert (info.width, info.height, info.make, info.model) == (70, 30, "Olympus", "DP27")


def test_png_without_tags_has_empty_make_and_model(tmp_path: Path):
    info = read_camera_info(_png(tmp_path / "p.png", 33, 21), "p.png")
    assert (info.width, info.height, info.make, info.model) == (33, 21, "", "")


def test_png_exif_chunk_is_read(tmp_path: Path):
    exif = Image.Exif()
    exif[MAKE], exif[MODEL] = "Leica", "DFC450"
    path = tmp_path / "e.png"
    Image.fromarray(_pixels(20, 10)).save(path, "PNG", exif=exif)
    info = read_camera_info(path, "e.png")
    assert (info.make, info.model, info.width) == ("Leica", "DFC450", 20)


def test_unreadable_files_raise_input_errors(tmp_path: Path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    with pytest.raises(UnsupportedFormatError):
        read_camera_info(text, "notes.jpg")
    with pytest.raises(InputError, match="not found"):
        read_camera_info(tmp_path / "missing.jpg", "missing.jpg")
    truncated = tmp_path / "cut.tif"
    truncated.write_bytes(_tiff(tmp_path / "whole.tif", 8, 8, "A", "B").read_bytes()[:12])
    with pytest.raises(InputError):
        read_camera_info(truncated, "cut.tif")


# -- matching ----------------------------------------------------------------------------


def test_first_matching_profile_in_file_order_wins():
    wide = CameraProfile("any 640x480", 0.2, width=640, height=480)
    canon = CameraProfile("canon", 0.1, make="canon")
    info = _info("a.jpg", make="Canon", model="EOS 5D")
    assert match_profile([wide, canon], info) is wide
    assert match_profile([canon, wide], info) is canon
    assert match_profile([canon], _info("b.jpg", make="Nikon")) is None


def test_every_rule_of_a_profile_must_match():
    profile = CameraProfile("ward3", 0.1, 640, 480, glob="ward3/**", make="Olympus", model="DP27")
    good = _info("ward3/day1/a.jpg", make=" OLYMPUS ", model="dp27")
    assert match_profile([profile], good) is profile
    for bad in (
        _info("ward3/day1/a.jpg", 641, 480, "Olympus", "DP27"),
        _info("ward4/a.jpg", make="Olympus", model="DP27"),
        _info("ward3/a.jpg", make="Olympus", model="DP28"),
        _info("ward3/a.jpg", make="", model="DP27"),
    ):
        assert match_profile([profile], bad) is None, bad


def test_glob_on_relative_and_absolute_paths():
    info = _info("ward3/day1/a.jpg")  # absolute /data/in/ward3/day1/a.jpg
    assert match_profile([CameraProfile("r", 0.1, glob="ward3/**")], info)
    assert match_profile([CameraProfile("abs", 0.1, glob="/data/in/**")], info)
    assert match_profile([CameraProfile("any", 0.1, glob="**/day1/*.jpg")], info)
    assert not match_profile([CameraProfile("one level", 0.1, glob="ward3/*")], info)
    assert not match_profile([CameraProfile("other", 0.1, glob="/data/out/**")], info)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("ward3/**", "ward3/a/b/c.jpg", True),
        ("*.jpg", "a.jpg", True),
        ("*.jpg", "ward3/a.jpg", False),
        ("ward3/**/a.jpg", "ward3/a.jpg", True),
        ("field_??.tif", "field_01.tif", True),
        ("field_[0-4].tif", "field_3.tif", True),
        ("field_[!0-4].tif", "field_7.tif", True),
        ("field_[!0-4].tif", "field_3.tif", False),
        ("a[*]b", "a*b", True),
        ("a.jpg", "axjpg", False),
        ("Ward3/**", "ward3/a.jpg", False),
    ],
)
def test_glob_rules(pattern: str, path: str, expected: bool):
    assert glob_matches(pattern, path) is expected


def test_camera_signature_is_readable_and_deterministic():
    info = _info("ward3/a.jpg", make="Canon", model="Canon  EOS 5D")
    assert camera_signature(info, "in/ward3/") == "640x480 | Canon EOS 5D | in/ward3"
    other = _info("ward3/b.jpg", make="Olympus", model="DP27")
    assert camera_signature(other, "in/ward3") == "640x480 | Olympus DP27 | in/ward3"
    assert camera_signature(_info("c.png", 33, 21), "in") == "33x21 | in"
    assert camera_signature(_info("c.png", 33, 21), "") == "33x21"


# -- configuration -----------------------------------------------------------------------

_CAMERAS = """
[[scale.cameras]]
name = "ward-3 DM96"
pixel_size_um = 0.1
width = 2592
height = 1944
glob = "ward3/**"
make = "Olympus"
model = "DP27"

[[scale.cameras]]
name = "lab PNGs"
pixel_size_um = 0.25
glob = "*.png"
"""


def test_cameras_load_round_trip_through_to_dict_and_overrides(tmp_path: Path):
    config = _load(tmp_path, _CAMERAS + "[scale]\npool = false\noutlier_tolerance = 0.2\n")
    first, second = config.scale.cameras
    assert first == CameraProfile("ward-3 DM96", 0.1, 2592, 1944, "ward3/**", "Olympus", "DP27")
    assert second == CameraProfile("lab PNGs", 0.25, glob="*.png")
    assert config.scale.pool is False and config.scale.outlier_tolerance == 0.2
    data = config.to_dict()
    assert json.loads(json.dumps(data))["scale"]["cameras"][1]["glob"] == "*.png"
    assert ProcessConfig().with_overrides(scale=data["scale"]) == config
    assert ProcessConfig().with_overrides(scale={"cameras": [second]}).scale.cameras == (second,)
    assert config.with_overrides(scale={"pixel_size_um": 0.3}).scale.cameras == (first, second)
    defaults = ProcessConfig().scale
    assert (defaults.cameras, defaults.pool, defaults.outlier_tolerance) == ((), True, 0.15)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "a"\npixel_size_um = 0.1\n', ["[scale] cameras[0]", "at least one rule"]),
        (
            'name = "a"\npixel_size_um = 0.1\nwidth = 640\n',
            ["[scale] cameras[0].width", "'a'", "both or neither"],
        ),
        (
            'name = "a"\npixel_size_um = "x"\nglob = "*"\n',
            ["[scale] cameras[0].pixel_size_um", "expected a number", "'x' (string)"],
        ),
        (
            'name = "a"\npixel_size_um = 0.1\nglob = "*"\nwdith = 640\n',
            ["unknown key 'wdith' in [scale] cameras[0]", "known:", "width"],
        ),
        ('name = "a"\nglob = "*"\n', ["[scale] cameras[0]", "'pixel_size_um' is required"]),
        ('name = "a"\npixel_size_um = 20\nglob = "*"\n', ["cameras[0].pixel_size_um", "0.01-10"]),
        ('name = "a"\npixel_size_um = 0.1\nwidth = 0\nheight = 5\n', ["cameras[0].width", "> 0"]),
        ('name = ""\npixel_size_um = 0.1\nglob = "*"\n', ["cameras[0].name", "non-empty"]),
        ('name = "a"\npixel_size_um = 0.1\nmake = 5\n', ["cameras[0].make", "a string", "5"]),
    ],
)
def test_bad_camera_tables_are_config_errors_naming_the_key(
    tmp_path: Path, text: str, expected: list[str]
):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "[[scale.cameras]]\n" + text)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "cameras.toml")), message
    for words in expected:
        assert words in message, (words, message)


def test_bad_second_camera_is_named_by_its_index(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"\[scale\] cameras\[2\]\.height \(camera 'c'\)"):
        _load(
            tmp_path, _CAMERAS + '[[scale.cameras]]\nname = "c"\npixel_size_um = 0.1\nheight = 9\n'
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_CAMERAS + '[[scale.cameras]]\nname = "LAB PNGs"\npixel_size_um = 0.1\nglob = "x"\n',
         ["scale.cameras[2].name", "repeats scale.cameras[1]", "unique"]),
        ('[scale]\ncameras = "ward3"\n', ["[scale] cameras", "a list of tables"]),
        ("[scale]\ncameras = [1]\n", ["[scale] cameras[0]", "a table", "1 (integer)"]),
        ("[scale]\noutlier_tolerance = 1.0\n", ["scale.outlier_tolerance", "(0, 1)"]),
        ("[scale]\noutlier_tolerance = 0\n", ["scale.outlier_tolerance", "(0, 1)"]),
        ('[scale]\npool = "yes"\n', ["[scale] pool", "true or false"]),
    ],
)  # fmt: skip
def test_scale_section_errors(tmp_path: Path, text: str, expected: list[str]):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    for words in expected:
        assert words in str(info.value), (words, str(info.value))


def test_profiles_built_in_python_are_checked_too():
    with pytest.raises(ConfigError, match="at least one rule"):
        CameraProfile("a", 0.1)
    with pytest.raises(ConfigError, match="unique"):
        ScaleConfig(cameras=(CameraProfile("a", 0.1, glob="*"), CameraProfile("a", 0.2, glob="x")))
    assert ScaleConfig(cameras=[CameraProfile("a", 0.1, glob="*")]).cameras[0].name == "a"  # type: ignore[arg-type]


def test_cli_bad_camera_is_exit_2_and_writes_nothing(tmp_path: Path):
    (tmp_path / "in").mkdir()
    config = tmp_path / "c.toml"
    config.write_text('[[scale.cameras]]\nname = "a"\npixel_size_um = 0.1\n')
    out = tmp_path / "out" / "r.xlsx"
    result = CliRunner().invoke(
        app, ["process", str(tmp_path / "in"), "--out", str(out), "--config", str(config), "-q"]
    )
    assert result.exit_code == 2, result.output
    assert "cameras[0]" in result.output and not (tmp_path / "out").exists()


# -- the snippet -------------------------------------------------------------------------


def test_profile_snippet_loads_back_to_profiles_matching_exactly_those_slides(tmp_path: Path):
    root = tmp_path / "in"
    slides = {
        "ward3": _jpeg(root / "ward3" / "a.jpg", 64, 48, "Olympus", "DP27"),
        "ward4": _jpeg(root / "ward4" / "b.jpg", 64, 48, "Olympus", "DP27"),  # same camera kind
        "canon": _jpeg(root / "ward4" / "c.jpg", 64, 48, "Canon", "Canon EOS 5D"),
        "pngs": _png(root / "d.png", 64, 48),  # no tags, same size as all the others
        "scanner": _tiff(root / "scans" / "s.tif", 90, 60, 'Zeiss "Axio"', "Scan\\1"),
    }
    infos = {k: read_camera_info(p, p.relative_to(root).as_posix()) for k, p in slides.items()}
    sizes = {"ward3": 0.123456, "ward4": 0.2, "canon": 0.1, "pngs": 1.0, "scanner": 0.25}
    snippet = profile_snippet(
        [(k, sizes[k], infos[k]) for k in ("pngs", "ward3", "ward4", "canon", "scanner")]
    )
    config = _load(tmp_path, snippet)
    profiles = config.scale.cameras
    assert len(profiles) == 5
    for key, info in infos.items():
        found = match_profile(profiles, info)
        assert found is not None and found.name == key, (key, found, snippet)
        assert found.pixel_size_um == float(f"{sizes[key]:.4g}")
    # same size and make/model in two folders, or no tags known: bound to the folder
    assert [(p.name, p.glob) for p in profiles if p.glob] == [
        ("ward3", "ward3/*"), ("ward4", "ward4/*"), ("pngs", "*")
    ]  # fmt: skip
    # another slide of a profiled folder matches; one of a new folder or size does not
    more = _jpeg(root / "ward3" / "e.jpg", 64, 48, "olympus", "dp27")
    assert match_profile(profiles, read_camera_info(more, "ward3/e.jpg")).name == "ward3"
    for name, size in (("f.jpg", (65, 48)), ("g.jpg", (64, 48))):
        new = _jpeg(root / "ward5" / name, *size, "Olympus", "DP27")
        assert match_profile(profiles, read_camera_info(new, f"ward5/{name}")) is None
    assert match_profile(profiles, read_camera_info(_png(root / "h.png", 64, 48), "h.png"))
    assert match_profile(profiles, _info("x.png", 65, 48)) is None


def test_profile_snippet_uses_absolute_folders_when_relative_ones_collide(tmp_path: Path):
    a = CameraInfo("f.jpg", tmp_path / "night1" / "f.jpg", 64, 48, "Olympus", "DP27")
    b = CameraInfo("g.jpg", tmp_path / "night[2]" / "g.jpg", 64, 48, "Olympus", "DP27")
    profiles = _load(tmp_path, profile_snippet([("a", 0.1, a), ("a", 0.2, b)])).scale.cameras
    assert [p.name for p in profiles] == ["a", "a-2"]
    assert profiles[0].glob == f"{(tmp_path / 'night1').as_posix()}/*"
    assert match_profile(profiles, a) is profiles[0] and match_profile(profiles, b) is profiles[1]


def test_profile_snippet_leaves_out_an_implausible_pixel_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bogus, good = _info("a/x.png"), _info("b/y.png")  # same size, no tags: both need a glob
    text = profile_snippet([("bogus", 50.0, bogus), ("good", 0.2, good)])
    assert "bogus" in caplog.text and "outside 0.01-10" in caplog.text
    (profile,) = _load(tmp_path, text).scale.cameras
    assert profile.name == "good" and profile.glob == "b/*"
    assert match_profile([profile], bogus) is None and match_profile([profile], good) is profile
