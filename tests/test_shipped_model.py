"""The shipped default weights: recorded sha256, refusal of a changed file, and quality."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from smearscan import registry
from smearscan.cli import app
from smearscan.config import DEFAULT_MODEL, ProcessConfig
from smearscan.errors import ModelError
from smearscan.evaluation import WBC_SEG_PIXEL_SIZE_UM, evaluate_mask_set
from smearscan.models.network import SegmentationNet

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_default_model_is_the_shipped_one() -> None:
    assert ProcessConfig().model == DEFAULT_MODEL
    assert DEFAULT_MODEL in registry.SHIPPED
    path, digest = registry.shipped_path(DEFAULT_MODEL)
    assert path.is_file() and path.stat().st_size < 10 * 2**20  # small: a few MB
    assert registry.model_sha256(DEFAULT_MODEL) == digest
    model = registry.load_model(DEFAULT_MODEL)
    assert isinstance(model, SegmentationNet)
    assert model.spec.name == DEFAULT_MODEL
    assert model.spec.halo_px * 2 >= model.spec.extra["receptive_field_px"] - 1


def test_models_command_marks_the_default() -> None:
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    line = next(x for x in result.output.splitlines() if x.startswith(DEFAULT_MODEL))
    assert "[default]" in line
    assert "classical" in result.output


def test_a_changed_weights_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = registry.shipped_path(DEFAULT_MODEL)
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelError, match="sha256"):
        registry.load_model(DEFAULT_MODEL)


@pytest.mark.skipif(not (DATA / "wbc-seg").is_dir(), reason="../shared/data/wbc-seg not present")
@pytest.mark.parametrize("name", sorted(WBC_SEG_PIXEL_SIZE_UM))
def test_default_model_segments_wbc_seg(name: str) -> None:
    # The first 15 images of each set (most of them were in the training data: this
    # checks the shipped file and its use, not generalisation; see MODEL_CARD.md).
    scores = list(
        evaluate_mask_set(
            registry.load_model(DEFAULT_MODEL),
            DATA / "wbc-seg" / name,
            WBC_SEG_PIXEL_SIZE_UM[name],
            limit=15,
        )
    )
    assert np.mean([s.nucleus_dice for s in scores]) > 0.93
    assert np.mean([s.cell_dice for s in scores]) > 0.93
