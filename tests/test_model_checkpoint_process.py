"""``process --model PATH.pt``: a trained-model checkpoint runs through the real pipeline."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import zarr

from smearscan.checkpoint import file_sha256, save_checkpoint
from smearscan.config import ProcessConfig, ScaleConfig
from smearscan.models import build_model
from smearscan.pipeline import process_batch
from smearscan.synth import generate_field, write_field

ARCH = {
    "arch": "unet",
    "width": 4,
    "depth": 2,
    "n_classes": 5,
    "input_pixel_size_um": 0.25,
    "deep_supervision": False,
}


def _setup(tmp_path: Path) -> tuple[Path, ProcessConfig]:
    write_field(generate_field(9, width=500, height=400), tmp_path / "in" / "f.png")
    model = build_model(**ARCH, name="test-unet")  # type: ignore[arg-type]
    save_checkpoint(tmp_path / "m.pt", model, arch=ARCH)
    config = dataclasses.replace(
        ProcessConfig(scale=ScaleConfig(pixel_size_um=0.1)), model=str(tmp_path / "m.pt")
    )
    return tmp_path / "m.pt", config


def test_checkpoint_runs_through_process_and_is_recorded(tmp_path: Path):
    path, config = _setup(tmp_path)
    batch = process_batch([tmp_path / "in"], tmp_path / "o" / "r.xlsx", config)
    (result,) = batch.results
    assert result.status == "ok", result.error
    assert result.model == "test-unet" and result.model_pixel_size_um == 0.25
    classes = zarr.open_group(result.mask_path, mode="r")["labels/classes/s0"]
    assert classes.shape == (160, 200)  # 0.1 -> 0.25 µm/px
    run = pd.read_excel(tmp_path / "o" / "r.xlsx", sheet_name="Run").set_index("key")["value"]
    assert run["model_sha256"] == file_sha256(path)


def test_tampered_checkpoint_fails_every_slide_with_the_reason(tmp_path: Path):
    path, config = _setup(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    batch = process_batch([tmp_path / "in"], tmp_path / "o" / "r.xlsx", config)
    (result,) = batch.results
    assert result.status == "failed" and result.error_stage == "model"
    assert "sha256" in result.error
    run = pd.read_excel(tmp_path / "o" / "r.xlsx", sheet_name="Run").set_index("key")["value"]
    assert str(run["model_sha256"]).startswith("unverified")
