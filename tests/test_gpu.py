"""CUDA path: AMP inference, tiled vs whole on the GPU, a slide processed with --device cuda."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from smearscan.config import InferenceConfig, ProcessConfig, ScaleConfig, TilingConfig
from smearscan.inference import TilePredictor, choose_device
from smearscan.models.tiny import TinyUNet
from smearscan.pipeline import process_slide
from smearscan.segmentation import segment_array
from smearscan.synth import generate_field, write_field

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_amp_predictions_match_cpu_and_tiled_matches_whole():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 420, 3), dtype=np.uint8)
    model = TinyUNet()
    cpu = TilePredictor(model, torch.device("cpu")).predict(image[None])[0]
    gpu_predictor = TilePredictor(TinyUNet(), torch.device("cuda"), amp=True)
    assert gpu_predictor.amp
    gpu = gpu_predictor.predict(image[None])[0]
    assert np.abs(gpu - cpu).max() < 3e-2  # reduced precision under autocast
    tiled = segment_array(image, TinyUNet(), tiling=TilingConfig(tile_size_px=128), device="cuda")
    inner = (slice(None), slice(16, -16), slice(16, -16))
    assert np.abs(tiled[inner] - gpu[inner]).max() < 3e-2


def test_process_slide_on_cuda(tmp_path: Path):
    assert choose_device("auto").type == "cuda"
    write_field(generate_field(5, width=900, height=700, pixel_size_um=0.1), tmp_path / "f.png")
    config = ProcessConfig(
        scale=ScaleConfig(pixel_size_um=0.1), inference=InferenceConfig(device="cuda")
    )
    result = process_slide(tmp_path / "f.png", config, tmp_path / "out.zarr")
    assert result.status == "ok" and result.tiles >= 1


def test_train_with_amp_on_cuda(tmp_path: Path):
    from smearscan.checkpoint import load_checkpoint
    from smearscan.train_config import TrainConfig
    from smearscan.train_data import DataSource, load_samples
    from smearscan.training import fit, holdout_split
    from tests.annotated import PIXEL_SIZE_UM, write_mask_dataset

    data = write_mask_dataset(tmp_path / "drawn", n=10, seed=1)
    samples = load_samples([DataSource(data, PIXEL_SIZE_UM)], PIXEL_SIZE_UM)
    train_part, val_part = holdout_split(samples, 0.2, seed=0)
    config = TrainConfig(
        width=8, depth=2, crop_px=96, batch_size=2, epochs=10, lr=0.01, device="cuda", amp=True
    )
    result = fit(train_part, val_part, config, tmp_path / "run")
    assert result.best_score > 0.9
    state = load_checkpoint(result.last_path).training
    assert state is not None and state["scaler"]["scale"] > 0  # the AMP grad scaler ran


def test_process_with_a_trained_checkpoint_on_cuda(tmp_path: Path):
    from smearscan.checkpoint import save_checkpoint
    from smearscan.models import build_model

    model = build_model("resunet", width=8, depth=4)
    arch = {
        "arch": "resunet",
        "width": 8,
        "depth": 4,
        "n_classes": 5,
        "input_pixel_size_um": 0.25,
        "deep_supervision": False,
    }
    save_checkpoint(tmp_path / "m.pt", model, arch=arch)
    write_field(generate_field(6, width=900, height=700, pixel_size_um=0.1), tmp_path / "f.png")
    config = ProcessConfig(
        model=str(tmp_path / "m.pt"),
        scale=ScaleConfig(pixel_size_um=0.1),
        inference=InferenceConfig(device="cuda", amp=True),
    )
    result = process_slide(tmp_path / "f.png", config, tmp_path / "out.zarr")
    assert result.status == "ok" and result.tiles >= 1
