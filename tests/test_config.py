"""Configuration: defaults, TOML files, overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from smearscan.config import ProcessConfig, load_config
from smearscan.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_example_config_of_deploy_loads():
    config = load_config(REPO / "deploy" / "smearscan.toml.example")
    assert config.model == "classical" and config.inference.batch_size == 8


def test_overrides_keep_unset_values(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        'model = "classical"\n[tiling]\noverlap_px = 16\n[batch]\npatterns = ["*.tif"]\n'
    )
    config = load_config(path).with_overrides(tiling={"tile_size_px": 640, "overlap_px": None})
    assert config.tiling.overlap_px == 16 and config.tiling.tile_size_px == 640
    assert config.batch.patterns == ("*.tif",)
    assert config.to_dict()["tiling"]["tile_size_px"] == 640


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[tiling]\noverlap_px = -1\n", "overlap_px"),
        ("[inference]\ndevice = 'tpu'\n", "device"),
        ("[scale]\npixel_size_um = 50.0\n", "pixel_size_um"),
        ("[nonsense]\na = 1\n", "unknown configuration section"),
        ("[tiling]\ntile = 3\n", "unknown key"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_invalid_files_raise_config_error(tmp_path: Path, text: str, match: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_missing_file_and_defaults(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    assert load_config(None) == ProcessConfig()


def test_classify_section_from_toml(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[classify]\nclassifier = "rules"\nblast_size_vs_rbc = [1.6, 2.5]\n'
        "blast_min_nc_ratio = 0.85\ngranulocyte_veto = 0.5\n"
    )
    config = load_config(path)
    assert config.classify.classifier == "rules"
    assert config.classify.blast_size_vs_rbc == (1.6, 2.5)
    assert config.classify.blast_min_nc_ratio == 0.85
    assert config.classify.granulocyte_veto == 0.5
    assert ProcessConfig().classify.classifier == "cellnet-v1"
    path.write_text("[classify]\nblast_min_nc_ratio = 1.5\n")
    with pytest.raises(ConfigError, match="blast_min_nc_ratio"):
        load_config(path)
