"""Tests of the checkpoint format: round trip, sha256 sidecar, refusal of bad files."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from smearscan.checkpoint import (
    CHECKPOINT_FORMAT,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
    sidecar_path,
    spec_from_dict,
    spec_to_dict,
    verify_checkpoint,
)
from smearscan.errors import ModelError
from smearscan.models.factory import build_model
from smearscan.models.network import SegmentationNet

ARCH: dict[str, Any] = {
    "arch": "unet",
    "width": 4,
    "depth": 2,
    "n_classes": 5,
    "input_pixel_size_um": 0.25,
    "deep_supervision": False,
}


def _model(name: str = "tiny") -> SegmentationNet:
    torch.manual_seed(0)
    kwargs = {k: v for k, v in ARCH.items() if k != "arch"}
    return build_model(ARCH["arch"], name=name, **kwargs).eval()


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, SegmentationNet, str]:
    """A checkpoint of a small U-Net in ``tmp_path``, its model and its digest."""
    model = _model()
    path = tmp_path / "tiny.pt"
    digest = save_checkpoint(
        path,
        model,
        arch=ARCH,
        postprocess={"min_cell_area_um2": 4.0, "mode": "watershed"},
        metadata={"command": "smearscan train", "created": "2024-01-01T00:00:00Z"},
    )
    return path, model, digest


def test_round_trip_same_outputs_and_spec(saved: tuple[Path, SegmentationNet, str]) -> None:
    path, model, digest = saved
    loaded = load_checkpoint(path)
    assert not loaded.model.training
    assert loaded.spec == model.spec
    assert loaded.model.spec == model.spec
    assert loaded.spec.extra == model.spec.extra
    assert isinstance(loaded.spec.classes, tuple) and isinstance(loaded.spec.mean, tuple)
    assert loaded.spec.name == "tiny"
    assert loaded.postprocess == {"min_cell_area_um2": 4.0, "mode": "watershed"}
    assert loaded.metadata["command"] == "smearscan train"
    assert loaded.training is None
    assert loaded.sha256 == digest
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded.model(x))


def test_same_model_gives_the_same_file_wherever_saved(tmp_path: Path) -> None:
    # a shipped file's sha256 must follow from its content alone, not from its file name
    a = save_checkpoint(tmp_path / "a" / "one.pt", _model(), arch=ARCH)
    b = save_checkpoint(tmp_path / "b" / "other-name.pt", _model(), arch=ARCH)
    assert a == b


def test_stored_spec_replaces_built_spec(tmp_path: Path) -> None:
    model = _model()
    model.spec = dataclasses.replace(model.spec, halo_px=40, tile_px=256, mean=(0.1, 0.2, 0.3))
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, arch=ARCH)
    loaded = load_checkpoint(path)
    assert loaded.model.spec.halo_px == 40
    assert loaded.model.spec.tile_px == 256
    assert loaded.model.spec.mean == (0.1, 0.2, 0.3)


def test_stored_halo_smaller_than_the_receptive_field_is_refused(tmp_path: Path) -> None:
    model = _model()
    model.spec = dataclasses.replace(model.spec, halo_px=model.spec.halo_px - 4)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, arch=ARCH)
    with pytest.raises(ModelError, match="halo"):
        load_checkpoint(path)


def test_spec_dict_round_trip() -> None:
    spec = _model().spec
    d = spec_to_dict(spec)
    assert isinstance(d["classes"], list) and isinstance(d["std"], list)
    assert spec_from_dict(d) == spec
    with pytest.raises(ModelError, match="unknown fields"):
        spec_from_dict({**d, "bogus": 1})


def test_sidecar_is_sha256sum_format(saved: tuple[Path, SegmentationNet, str]) -> None:
    path, _, digest = saved
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == expected == file_sha256(path)
    assert sidecar_path(path).read_text() == f"{expected}  tiny.pt\n"
    assert verify_checkpoint(path) == expected
    assert verify_checkpoint(path, expected.upper()) == expected
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_flipped_byte_is_refused(saved: tuple[Path, SegmentationNet, str]) -> None:
    path, _, digest = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and digest in str(info.value)
    with pytest.raises(ModelError, match="sha256"):
        verify_checkpoint(path, digest)


def test_missing_sidecar(saved: tuple[Path, SegmentationNet, str]) -> None:
    path, _, digest = saved
    sidecar_path(path).unlink()
    with pytest.raises(ModelError, match="sha256"):
        load_checkpoint(path)
    assert load_checkpoint(path, verify=False).sha256 == digest
    assert load_checkpoint(path, expected_sha256=digest).sha256 == digest


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def _with_fresh_sidecar(path: Path) -> Path:
    sidecar_path(path).write_text(f"{file_sha256(path)}  {path.name}\n")
    return path


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"x": 1}, path)
    with pytest.raises(ModelError, match="not a smearscan checkpoint"):
        load_checkpoint(_with_fresh_sidecar(path))


def test_unknown_version(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": 99}, path)
    with pytest.raises(ModelError, match="version 99"):
        load_checkpoint(_with_fresh_sidecar(path))


def test_truncated_file(saved: tuple[Path, SegmentationNet, str]) -> None:
    path, _, _ = saved
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="cannot read model checkpoint") as info:
        load_checkpoint(_with_fresh_sidecar(path))
    assert str(path) in str(info.value)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "obj": Path("x")}, path)
    with pytest.raises(ModelError, match="cannot read model checkpoint"):
        load_checkpoint(_with_fresh_sidecar(path))


def test_state_dict_mismatch(saved: tuple[Path, SegmentationNet, str]) -> None:
    path, _, _ = saved
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["head.weight"]
    torch.save(payload, path)
    with pytest.raises(ModelError, match="weights do not fit") as info:
        load_checkpoint(_with_fresh_sidecar(path))
    assert str(path) in str(info.value)


def test_spec_architecture_mismatch(saved: tuple[Path, SegmentationNet, str]) -> None:
    path, _, _ = saved
    payload = torch.load(path, weights_only=True)
    payload["spec"]["architecture"] = "vnet"
    torch.save(payload, path)
    with pytest.raises(ModelError, match="architecture"):
        load_checkpoint(_with_fresh_sidecar(path))


def test_save_refuses_wrong_arch_and_unplain_values(tmp_path: Path) -> None:
    model = _model()
    with pytest.raises(ModelError, match="do not match arch"):
        save_checkpoint(tmp_path / "a.pt", model, arch={**ARCH, "width": 8})
    with pytest.raises(ModelError, match="missing: deep_supervision"):
        save_checkpoint(
            tmp_path / "b.pt",
            model,
            arch={k: v for k, v in ARCH.items() if k != "deep_supervision"},
        )
    with pytest.raises(ModelError, match=r"metadata\.path"):
        save_checkpoint(tmp_path / "c.pt", model, arch=ARCH, metadata={"path": Path("x")})
    assert not list(tmp_path.iterdir())


def test_training_state_round_trip(tmp_path: Path) -> None:
    model = _model()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(1, 3, 16, 16)).mean().backward()
    optimizer.step()
    training: dict[str, Any] = {
        "epoch": 3,
        "best_metric": 0.875,
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": [{"epoch": 1, "loss": 1.5}, {"epoch": 2, "loss": 1.2}],
    }
    path = tmp_path / "resume.pt"
    save_checkpoint(path, model, arch=ARCH, training=training)

    # the file itself is plain data: weights_only loading needs no smearscan classes
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["version"] == 1

    loaded = load_checkpoint(path)
    assert loaded.training is not None
    assert loaded.training["epoch"] == 3 and loaded.training["history"][1]["loss"] == 1.2
    assert torch.equal(loaded.training["torch_rng"], training["torch_rng"])
    restored = torch.optim.Adam(loaded.model.parameters(), lr=1.0)
    restored.load_state_dict(loaded.training["optimizer"])
    assert restored.param_groups[0]["lr"] == 1e-3
    for p_old, p_new in zip(model.parameters(), loaded.model.parameters(), strict=True):
        old, new = optimizer.state[p_old], restored.state[p_new]
        assert torch.equal(old["exp_avg"], new["exp_avg"])
        assert torch.equal(old["exp_avg_sq"], new["exp_avg_sq"])


def test_deep_supervision_unetpp(tmp_path: Path) -> None:
    arch = {**ARCH, "arch": "unetpp", "deep_supervision": True}
    torch.manual_seed(1)
    model = build_model("unetpp", width=4, depth=2, deep_supervision=True).eval()
    path = tmp_path / "upp.pt"
    save_checkpoint(path, model, arch=arch)
    loaded = load_checkpoint(path)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded.model(x))
    assert loaded.spec == model.spec
