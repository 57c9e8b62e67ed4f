"""U-Net family architectures: shapes, receptive field and halo, tiling, factory errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smearscan.config import TilingConfig
from smearscan.errors import ModelError
from smearscan.inference import TilePredictor
from smearscan.models.base import SEMANTIC_CLASSES
from smearscan.models.factory import ARCHITECTURES, build_model
from smearscan.models.network import SegmentationNet
from smearscan.segmentation import segment_array


def _model(arch: str, *, width: int = 4, depth: int = 2, **kwargs: object) -> SegmentationNet:
    torch.manual_seed(0)
    return build_model(arch, width=width, depth=depth, **kwargs)  # type: ignore[arg-type]


def _calibrate_batchnorm(model: SegmentationNet, size: int, dtype: torch.dtype) -> None:
    """Give BatchNorm realistic running statistics (cumulative over random inputs), then eval."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    generator = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, size, size, generator=generator, dtype=dtype))
    model.eval()


def _textured_image(h: int, w: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]
    return np.clip(img.astype(int) + rng.integers(-20, 20, size=img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_shapes_and_spec(arch: str):
    model = _model(arch, depth=3).eval()
    for h, w in [(64, 64), (96, 128)]:
        with torch.no_grad():
            y = model(torch.randn(2, 3, h, w))
        assert y.shape == (2, 5, h, w)
        assert torch.isfinite(y).all()
    spec = model.spec
    assert spec.architecture == arch and spec.name == arch
    assert spec.classes == SEMANTIC_CLASSES and spec.output == "logits"
    assert spec.size_multiple == 8 and spec.tile_px % 8 == 0
    assert spec.extra["width"] == 4 and spec.extra["depth"] == 3
    assert len(model.forward_heads(torch.randn(1, 3, 16, 16))) == 1
    with pytest.raises(ModelError, match="multiples of 8"):
        model(torch.randn(1, 3, 20, 16))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_receptive_field_matches_gradient_support(arch: str):
    depth = 3
    model = _model(arch, width=8, depth=depth).double()
    rf = model.receptive_field_px()
    assert rf % 2 == 1
    grid = 2**depth
    size = (rf // grid + 4) * grid  # the support never reaches the zero-padded border
    _calibrate_batchnorm(model, size, torch.float64)
    x = torch.randn(
        1, 3, size, size, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    x.requires_grad_(True)
    y = model(x)
    lo, hi, centre_extent = 0, 0, 0
    for offset in range(grid):  # every position on the pooling grid
        c = size // 2 + offset
        (grad,) = torch.autograd.grad(y[0, :, c, c].sum(), x, retain_graph=True)
        support = grad[0].abs().sum(dim=0) > 0
        rows = support.any(dim=1).nonzero().flatten() - c
        cols = support.any(dim=0).nonzero().flatten() - c
        assert len(rows) > 0, "degenerate network: output independent of input"
        lo = min(lo, int(rows.min()), int(cols.min()))
        hi = max(hi, int(rows.max()), int(cols.max()))
        if offset == 0:
            centre_extent = int(rows.max() - rows.min()) + 1
        # the halo must hold the whole support on each side, whatever the position
        assert max(-lo, hi) <= model.spec.halo_px
    assert max(-lo, hi) <= (rf - 1) // 2  # reported field covers the true support
    assert hi - lo + 1 >= 0.75 * rf  # ... and is not wildly conservative
    assert centre_extent >= 0.5 * rf
    assert 2 * model.spec.halo_px >= centre_extent
    assert model.spec.halo_px % grid == 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiled_equals_whole_image(arch: str):
    model = _model(arch, depth=2)
    _calibrate_batchnorm(model, 64, torch.float32)
    image = _textured_image(200, 260)
    whole = TilePredictor(model, torch.device("cpu")).predict(image[None])[0]
    tiled = segment_array(image, model, tiling=TilingConfig(tile_size_px=96, overlap_px=8))
    border = model.spec.halo_px
    inner = (slice(None), slice(border, -border), slice(border, -border))
    assert np.abs(tiled[inner] - whole[inner]).max() < 1e-3
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)


def test_unetpp_deep_supervision_heads():
    x = torch.randn(2, 3, 32, 48)
    deep = _model("unetpp", depth=3, deep_supervision=True).eval()
    with torch.no_grad():
        heads = deep.forward_heads(x)
        final = deep(x)
    assert len(heads) == 3
    assert all(h.shape == (2, 5, 32, 48) for h in heads)
    torch.testing.assert_close(heads[-1], final)
    assert deep.spec.extra["deep_supervision"] is True
    plain = _model("unetpp", depth=3).eval()
    with torch.no_grad():
        assert [h.shape for h in plain.forward_heads(x)] == [(2, 5, 32, 48)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "segnet"}, "unknown architecture 'segnet'"),
        ({"arch": "unet", "depth": 0}, "depth must be between 1 and 6"),
        ({"arch": "unet", "depth": 7}, "depth must be between 1 and 6"),
        ({"arch": "vnet", "width": 0}, "width must be >= 1"),
        ({"arch": "resunet", "n_classes": 0}, "n_classes must be >= 1"),
        ({"arch": "unet", "deep_supervision": True}, "only available for unetpp"),
    ],
)
def test_build_model_errors(kwargs: dict[str, object], match: str):
    with pytest.raises(ModelError, match=match):
        build_model(**kwargs)  # type: ignore[arg-type]


def test_construction_is_deterministic_and_names_classes():
    a, b = _model("vnet", n_classes=3, name="v1"), _model("vnet", n_classes=3, name="v1")
    for (key, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), key
    assert a.spec.classes == ("class0", "class1", "class2") and a.spec.name == "v1"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_default_size_is_small(arch: str):
    model = _model(arch, width=16, depth=4)
    assert sum(p.numel() for p in model.parameters()) < 8_000_000
    assert model.spec.size_multiple == 16 and model.spec.halo_px % 16 == 0
    assert model.spec.tile_px - 2 * model.spec.halo_px >= 128  # tiles keep a useful core
