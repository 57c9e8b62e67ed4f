"""--group-by: file-name patterns and CSV manifests, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from smearscan.errors import ConfigError
from smearscan.grouping import ManifestGrouper, assign_groups, is_manifest, make_grouper

FIELDS = ["Im001_1_a.jpg", "run2/Im001_1_b.jpg", "Im002_0.jpg", "notes/other.png"]


def test_no_spec_every_field_its_own_group():
    assert assign_groups(FIELDS, None) == (FIELDS, [True] * 4)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"^(Im\d+)", ["Im001", "Im001", "Im002"]),  # group 1
        (r"^Im\d+", ["Im001", "Im001", "Im002"]),  # no group: the whole match
        (r"(\d)_(?P<group>Im\d+)?", [None, None, None]),  # the named group, even if empty
        (r"_(\d)_?(?P<group>[ab])", ["a", "b", None]),  # the named group, not group 1
    ],
)
def test_pattern_is_searched_in_the_file_name(pattern: str, expected: list):
    grouper = make_grouper(pattern)
    assert [grouper.group_of(f) for f in FIELDS[:3]] == expected


def test_unmatched_field_is_its_own_group_with_a_warning(caplog):
    groups, matched = assign_groups(FIELDS, r"^(Im\d+)")
    assert groups == ["Im001", "Im001", "Im002", "notes/other.png"]
    assert matched == [True, True, True, False]
    assert "notes/other.png" in caplog.text and "own group" in caplog.text


def test_folder_names_are_not_matched():
    assert make_grouper(r"^(run\d)").group_of("run2/Im001_1_b.jpg") is None


@pytest.mark.parametrize("pattern", ["^(Im\\d+", "*.jpg", "(?P<group>a)(?P<group>b)"])
def test_bad_pattern_is_a_config_error(pattern: str):
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        make_grouper(pattern)


def _manifest(tmp_path: Path, text: str, name: str = "groups.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_manifest_by_relative_path_then_file_name(tmp_path: Path, caplog):
    path = _manifest(
        tmp_path,
        "image, group ,comment\n"
        "Im001_1_a.jpg,patient 7,x\n"
        "run2/Im001_1_b.jpg,patient 7,\n"
        "\n"
        "./other.png,patient 9,\n"
        "missing.jpg,patient 9,\n",
    )
    assert is_manifest(str(path))
    groups, matched = assign_groups(FIELDS, str(path))
    assert groups == ["patient 7", "patient 7", "Im002_0.jpg", "patient 9"]
    assert matched == [True, True, False, True]
    assert "missing.jpg" in caplog.text


def test_manifest_without_a_header_names_file_and_line(tmp_path: Path):
    path = _manifest(tmp_path, "Im001_1_a.jpg,p1\n")
    with pytest.raises(ConfigError, match=r"groups\.csv:1: .*image,group"):
        ManifestGrouper.read(path)


def test_manifest_with_an_empty_group_names_the_line(tmp_path: Path):
    path = _manifest(tmp_path, "image,group\na.jpg,p1\nb.jpg,\n")
    with pytest.raises(ConfigError, match=r"groups\.csv:3: both image and group"):
        make_grouper(str(path))


def test_manifest_listing_an_image_in_two_groups(tmp_path: Path):
    path = _manifest(tmp_path, "image,group\na.jpg,p1\nb.jpg,p1\na.jpg,p2\n")
    with pytest.raises(ConfigError, match=r"groups\.csv:4: a\.jpg is already in group 'p1'"):
        make_grouper(str(path))


def test_missing_manifest_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot be read"):
        make_grouper(str(tmp_path / "nowhere.csv"))


def test_cli_bad_pattern_exits_2_before_processing(tmp_path: Path):
    from typer.testing import CliRunner

    from smearscan.cli import app

    (tmp_path / "in").mkdir()
    args = ["process", str(tmp_path / "in"), "--out", str(tmp_path / "r.xlsx"), "--quiet"]
    result = CliRunner().invoke(app, [*args, "--group-by", "^(Im\\d+", "--min-wbc-count", "200"])
    assert result.exit_code == 2, result.output
    assert "not a valid regular expression" in result.output
    assert not (tmp_path / "r.xlsx").exists()
