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
