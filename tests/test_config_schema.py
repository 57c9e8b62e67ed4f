"""Strict types in the TOML configuration: every wrong type is refused, naming the key,
the expected type and the value (issue #13, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from smearscan.cli import app
from smearscan.config import ProcessConfig, load_config
from smearscan.errors import ConfigError

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[batch]\npatterns = "*.tif"\n', ["[batch] patterns", "a list of strings", "'*.tif'"]),
        ('[batch]\nforce = "false"\n', ["[batch] force", "true or false", "'false'"]),
        ('[output]\nwrite_previews = "no"\n', ["[output] write_previews", "true or false", "'no'"]),
        ("[batch]\nmax_pixels = nan\n", ["[batch] max_pixels", "whole number", "nan"]),
        ("[batch]\nmax_pixels = inf\n", ["[batch] max_pixels", "whole number", "inf"]),
        ("[scale]\nrbc_diameter_um = nan\n", ["[scale] rbc_diameter_um", "finite number", "nan"]),
        ("[batch]\nledger = 5\n", ["[batch] ledger", "a string", "5 (integer)"]),
        ("[batch]\nsince = 5\n", ["[batch] since", "a string", "5 (integer)"]),
        ("[batch]\nsince = 2026-12-01\n", ["[batch] since", "a string", "2026-12-01", "quote"]),
        ("[review]\ngroup_by = 5\n", ["[review] group_by", "a string", "5 (integer)"]),
        ("[batch]\nworkers = 2.0\n", ["[batch] workers", "an integer", "2.0 (float)"]),
        ("[batch]\nworkers = true\n", ["[batch] workers", "an integer", "true (boolean)"]),
        ("[batch]\npatterns = [1]\n", ["[batch] patterns[0]", "a string", "1 (integer)"]),
        ("[cells]\nplatelet_area_um2 = [1.0]\n", ["platelet_area_um2", "a list of 2 numbers"]),
        ('[scale]\npixel_size_um = "0.1"\n', ["[scale] pixel_size_um", "a number", "'0.1'"]),
        ("model = 5\n", ["model", "a string", "5 (integer)"]),
        ("batch = 5\n", ["[batch] must be a table"]),
        ("modle = 'classical'\n", ["unknown configuration section 'modle'", "known: model"]),
        ("[tiling]\ntile_sise_px = 384\n", ["unknown key 'tile_sise_px' in [tiling]", "known:"]),
        ("[inference]\ndevice = 'tpu'\n", ["[inference] device", "'cuda'", "'tpu'"]),
    ],
)
def test_wrong_types_are_refused_naming_key_type_and_value(
    tmp_path: Path, text: str, expected: list[str]
):
    path = tmp_path / "smearscan.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for words in expected:
        assert words in message, (words, message)


def test_every_wrong_key_is_reported_at_once(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[batch]\nforce = "false"\npatterns = "*.tif"\n[output]\nwrite_image = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "force" in message and "patterns" in message and "write_image" in message


def test_right_types_still_load(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        'model = "classical"\n[batch]\npatterns = ["*.tif", "*.png"]\nforce = false\n'
        "max_pixels = 2.5e9\nsince = '7d'\n[scale]\npixel_size_um = 1\n"
        "[cells]\nplatelet_area_um2 = [1, 10.5]\n[output]\nwrite_previews = false\n"
    )
    config = load_config(path)
    assert config.batch.patterns == ("*.tif", "*.png") and config.batch.force is False
    assert config.batch.max_pixels == 2_500_000_000 and isinstance(config.batch.max_pixels, int)
    assert config.scale.pixel_size_um == 1.0 and config.cells.platelet_area_um2 == (1.0, 10.5)
    assert config.output.write_previews is False


def test_overrides_are_checked_with_the_same_schema():
    with pytest.raises(ConfigError, match=r"\[batch\] force: expected true or false"):
        ProcessConfig().with_overrides(batch={"force": "false"})
    with pytest.raises(ConfigError, match="unknown key 'nope' in"):
        ProcessConfig().with_overrides(batch={"nope": 1})
    config = ProcessConfig().with_overrides(batch={"patterns": ["*.tif"], "max_pixels": 1000.0})
    assert config.batch.patterns == ("*.tif",) and config.batch.max_pixels == 1000


@pytest.mark.parametrize(
    "text",
    ['[batch]\npatterns = "*.tif"\n', "[batch]\nmax_pixels = nan\n", "[batch]\nsince = 5\n"],
)
def test_cli_wrong_type_in_config_is_exit_2_and_writes_nothing(tmp_path: Path, text: str):
    (tmp_path / "in").mkdir()
    config = tmp_path / "c.toml"
    config.write_text(text)
    out = tmp_path / "out" / "r.xlsx"
    result = runner.invoke(
        app, ["process", str(tmp_path / "in"), "--out", str(out), "--config", str(config), "-q"]
    )
    assert result.exit_code == 2, result.output
    assert str(config) in result.output and "expected" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_since_beyond_the_calendar_is_exit_2(tmp_path: Path):
    (tmp_path / "in").mkdir()
    out = tmp_path / "r.xlsx"
    result = runner.invoke(
        app, ["process", str(tmp_path / "in"), "--out", str(out), "--since", "99999999999d"]
    )
    assert result.exit_code == 2, result.output
    assert "--since" in result.output and "99999999999d" in result.output
