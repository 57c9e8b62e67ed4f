"""Training losses: identities, weight maps, ignore_index, parsing and a tiny optimisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from torch import Tensor, nn

from smearscan.errors import ConfigError
from smearscan.loss_spec import (
    DEFAULT_LOSS,
    CombinedLoss,
    LossSpecError,
    build_loss,
    deep_supervision_loss,
)
from smearscan.losses import (
    BCELoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
)
from smearscan.metrics import ConfusionMatrix

C = 5


def _target(n: int = 2, h: int = 12, w: int = 10, seed: int = 0) -> Tensor:
    """int64 ``(N, H, W)`` map with every class present."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, C, (n, h, w), generator=g)
    target[0, 0, :C] = torch.arange(C)
    return target


def _logits(target: Tensor, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    n, h, w = target.shape
    return torch.randn(n, C, h, w, generator=g)


def _perfect(target: Tensor, n_classes: int = C, margin: float = 30.0) -> Tensor:
    return F.one_hot(target, n_classes).permute(0, 3, 1, 2).float() * margin


MULTICLASS = [
    CrossEntropyLoss(),
    CrossEntropyLoss(class_weights=[0.5, 1, 2, 3, 1]),
    DiceLoss(),
    TverskyLoss(0.3, 0.7),
    FocalLoss(2.0),
    CombinedLoss({"ce": (CrossEntropyLoss(), 1.0), "dice": (DiceLoss(), 2.0)}),
]
IDS = ["ce", "ce_weighted", "dice", "tversky", "focal", "combined"]


@pytest.mark.parametrize("loss", MULTICLASS, ids=IDS)
def test_perfect_logits_give_near_zero_loss(loss: nn.Module):
    target = _target()
    value = loss(_perfect(target), target)
    assert value.dtype == torch.float32 and value.shape == ()
    assert 0 <= float(value) < 1e-6
    assert float(loss(_logits(target), target)) > 0.1


def test_cross_entropy_matches_torch():
    target = _target()
    logits = _logits(target)
    weights = torch.tensor([0.5, 1, 2, 3, 1])
    expected = F.cross_entropy(logits, target, weight=weights)
    assert CrossEntropyLoss(class_weights=weights)(logits, target).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_dice_by_hand():
    # One image, two pixels, two classes; probabilities p(class 1) = 0.8 and 0.4.
    target = torch.tensor([[[1, 0]]])
    p1 = torch.tensor([0.8, 0.4])
    logits = torch.stack([torch.zeros(2), torch.log(p1 / (1 - p1))]).view(1, 2, 1, 2)
    # class 0: I = 0.6, S = (0.2 + 0.6) + 1; class 1: I = 0.8, S = (0.8 + 0.4) + 1
    d0 = (2 * 0.6 + 1) / (0.8 + 1 + 1)
    d1 = (2 * 0.8 + 1) / (1.2 + 1 + 1)
    assert DiceLoss()(logits, target).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)
    assert DiceLoss(include_background=False)(logits, target).item() == pytest.approx(
        1 - d1, rel=1e-6
    )
    # Weight 0.5 on the first pixel: class 1 has I = 0.4, S = 0.5 * 1.8 + 0.4.
    weight = torch.tensor([[[0.5, 1.0]]])
    d1_w = (2 * 0.4 + 1) / (0.9 + 0.4 + 1)
    got = DiceLoss(include_background=False)(logits, target, weight)
    assert got.item() == pytest.approx(1 - d1_w, rel=1e-6)


def test_tversky_half_half_equals_dice():
    target = _target()
    logits = _logits(target)
    weight = torch.rand(target.shape, generator=torch.Generator().manual_seed(3))
    for smooth in (0.0, 1.0):
        dice = DiceLoss(smooth=smooth)(logits, target, weight)
        tversky = TverskyLoss(0.5, 0.5, smooth=smooth)(logits, target, weight)
        assert tversky.item() == pytest.approx(dice.item(), rel=1e-6)


def test_tversky_beta_punishes_false_negatives():
    # Under-segmentation of class 1: predicted nowhere, true on half the pixels.
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 1
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 0] = 3.0
    fn_heavy = TverskyLoss(alpha=0.2, beta=0.8, include_background=False)(logits, target)
    fp_heavy = TverskyLoss(alpha=0.8, beta=0.2, include_background=False)(logits, target)
    assert fn_heavy.item() > fp_heavy.item()


def test_focal_gamma_zero_equals_cross_entropy():
    target = _target()
    logits = _logits(target)
    weight = torch.rand(target.shape, generator=torch.Generator().manual_seed(4))
    alpha = [0.2, 1.0, 2.0, 1.5, 0.7]
    focal = FocalLoss(gamma=0.0, alpha=alpha)(logits, target, weight)
    ce = CrossEntropyLoss(class_weights=alpha)(logits, target, weight)
    assert focal.item() == pytest.approx(ce.item(), rel=1e-6)
    assert FocalLoss(gamma=2.0)(logits, target).item() < CrossEntropyLoss()(logits, target).item()


def test_binary_losses():
    g = torch.Generator().manual_seed(5)
    target = torch.randint(0, 2, (2, 6, 7), generator=g)
    logits = torch.randn(2, 1, 6, 7, generator=g)
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
    assert BCELoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    # C == 1 cross-entropy reads the logit as binary: same value.
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
    # Two-channel logits [0, z] give the same cross-entropy as sigmoid(z).
    two = torch.cat([torch.zeros_like(logits), logits], dim=1)
    assert CrossEntropyLoss()(two, target).item() == pytest.approx(expected.item(), rel=1e-5)
    assert DiceLoss()(logits, target).item() == pytest.approx(
        DiceLoss()(two, target).item(), rel=1e-5
    )
    weighted = BCELoss(pos_weight=3.0)(logits, target)
    ref = F.binary_cross_entropy_with_logits(
        logits[:, 0], target.float(), pos_weight=torch.tensor(3.0)
    )
    assert weighted.item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ValueError, match="single-channel"):
        BCELoss()(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def _grad(loss: nn.Module, logits: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
    x = logits.clone().requires_grad_(True)
    loss(x, target, weight).backward()
    assert x.grad is not None
    return x.grad


ALL_LOSSES = [*MULTICLASS, BCELoss()]
ALL_IDS = [*IDS, "bce"]


def _inputs_for(loss: nn.Module) -> tuple[Tensor, Tensor]:
    target = _target()
    if isinstance(loss, BCELoss):
        target = target % 2
        return _logits(target)[:, :1], target
    return _logits(target), target


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=ALL_IDS)
def test_zero_weight_region_has_no_influence(loss: nn.Module):
    logits, target = _inputs_for(loss)
    weight = torch.full(target.shape, 0.3)
    weight[:, :, :4] = 0.0
    grad = _grad(loss, logits, target, weight)
    assert torch.isfinite(grad).all()
    assert (grad[..., :4] == 0).all()
    assert (grad[..., 4:] != 0).any()
    changed = logits.clone()
    changed[..., :4] = torch.randn_like(changed[..., :4]) * 10
    assert loss(changed, target, weight).item() == pytest.approx(
        loss(logits, target, weight).item(), rel=1e-6
    )


@pytest.mark.parametrize("loss_cls", [CrossEntropyLoss, DiceLoss, TverskyLoss, FocalLoss, BCELoss])
def test_ignore_index(loss_cls: type[nn.Module]):
    loss = loss_cls(ignore_index=255)
    logits, target = _inputs_for(loss)
    ignored = target.clone()
    ignored[:, :3] = 255
    grad = _grad(loss, logits, ignored, None)
    assert torch.isfinite(grad).all()
    assert (grad[:, :, :3] == 0).all()
    # Same value as a zero weight on those pixels.
    weight = torch.ones(target.shape)
    weight[:, :3] = 0.0
    assert loss(logits, ignored).item() == pytest.approx(
        loss(logits, target, weight).item(), rel=1e-6
    )


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=ALL_IDS)
def test_everything_ignored_gives_zero_and_zero_grad(loss: nn.Module):
    logits, target = _inputs_for(loss)
    grad = _grad(loss, logits, target, torch.zeros(target.shape))
    assert (grad == 0).all()
    assert loss(logits, target, torch.zeros(target.shape)).item() == 0.0


def test_shape_errors():
    target = _target()
    with pytest.raises(ValueError, match="target"):
        DiceLoss()(_logits(target), target[:, :-1])
    with pytest.raises(ValueError, match="weight"):
        CrossEntropyLoss()(_logits(target), target, torch.ones(2, 3))
    with pytest.raises(ValueError, match="class weights"):
        CrossEntropyLoss(class_weights=[1.0, 2.0])(_logits(target), target)


def test_combined_loss_parts():
    target = _target()
    logits = _logits(target)
    ce, dice = CrossEntropyLoss(), DiceLoss()
    combined = CombinedLoss({"ce": (ce, 1.0), "dice": (dice, 2.0)})
    assert combined.last_parts == {}
    total = combined(logits, target)
    parts = combined.last_parts
    assert set(parts) == {"ce", "dice"}
    assert parts["ce"] == pytest.approx(ce(logits, target).item(), rel=1e-6)
    assert total.item() == pytest.approx(parts["ce"] + 2 * parts["dice"], rel=1e-6)
    assert combined.parts() == parts


def test_build_loss_parsing():
    default = build_loss()
    assert isinstance(default, CombinedLoss) and DEFAULT_LOSS == "ce+dice"
    assert list(default.terms) == ["ce", "dice"] and default.factors == {"ce": 1.0, "dice": 1.0}
    weighted = build_loss("ce:1,dice:2")
    assert weighted.factors == {"ce": 1.0, "dice": 2.0}
    focal = build_loss("focal")
    assert isinstance(focal.terms["focal"], FocalLoss) and focal.terms["focal"].gamma == 2.0
    focal = build_loss("focal:1:0.5")
    assert focal.terms["focal"].gamma == 1.0 and focal.factors["focal"] == 0.5
    tversky = build_loss(" Tversky:0.3:0.7 ").terms["tversky"]
    assert isinstance(tversky, TverskyLoss) and (tversky.alpha, tversky.beta) == (0.3, 0.7)
    kw = build_loss("tversky:beta=0.9:w=0.5+dice:smooth=0")
    assert kw.terms["tversky"].beta == 0.9 and kw.factors["tversky"] == 0.5
    assert kw.terms["dice"].smooth == 0.0
    bce = build_loss("bce:pos_weight=3", ignore_index=255).terms["bce"]
    assert isinstance(bce, BCELoss) and bce.pos_weight == 3.0 and bce.ignore_index == 255


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ce+hinge", "unknown loss 'hinge'.*valid names: ce, bce, dice, tversky, focal"),
        ("", "empty"),
        ("ce+", "empty"),
        ("dice:x", "not a finite number"),
        ("dice:w=nan", "not a finite number"),
        ("tversky:0.3:alpha=0.4", "given twice"),
        ("ce:1:2", "too many fields"),
        ("tversky:0.3:0.7:1:1", "too many fields"),
        ("dice:gamma=2", "no parameter 'gamma'"),
        ("ce+ce", "twice"),
        ("focal:-1", "gamma"),
    ],
)
def test_build_loss_errors(spec: str, message: str):
    with pytest.raises(ValueError, match=message) as info:
        build_loss(spec)
    assert isinstance(info.value, LossSpecError) and isinstance(info.value, ConfigError)


def test_deep_supervision():
    target = _target(h=16, w=16)
    full = _logits(target)
    half = F.avg_pool2d(_logits(target, seed=7), 2)
    loss = build_loss("ce+dice")
    value = deep_supervision_loss(loss, [full, half], target, weights=[3.0, 1.0])
    up = F.interpolate(half, size=(16, 16), mode="bilinear", align_corners=False)
    first, parts_first = loss(full, target), loss.last_parts
    second, parts_second = loss(up, target), loss.last_parts
    assert value.item() == pytest.approx((3 * first.item() + second.item()) / 4, rel=1e-6)
    deep_supervision_loss(loss, [full, half], target, weights=[3.0, 1.0])
    for name in ("ce", "dice"):
        expected = (3 * parts_first[name] + parts_second[name]) / 4
        assert loss.last_parts[name] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        deep_supervision_loss(loss, [], target)
    with pytest.raises(ValueError):
        deep_supervision_loss(loss, [full], target, weights=[1.0, 2.0])


def test_autocast_inputs_give_float32_loss():
    target = _target()
    logits = _logits(target).requires_grad_(True)
    loss = build_loss("ce+dice+focal+tversky")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits.bfloat16(), target)
    assert value.dtype == torch.float32
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert math.isclose(value.item(), loss(logits, target).item(), rel_tol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_autocast_matches_cpu():
    target = _target()
    logits = _logits(target)
    loss = build_loss("ce+dice+focal+tversky", ignore_index=255)
    cpu = loss(logits, target).item()
    x = logits.cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16):
        value = loss.cuda()(x.half(), target.cuda(), torch.ones(target.shape, device="cuda"))
    assert value.dtype == torch.float32 and value.device.type == "cuda"
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert value.item() == pytest.approx(cpu, rel=1e-2)


def test_tiny_optimisation_reaches_high_dice():
    torch.manual_seed(0)
    target = torch.zeros(1, 24, 24, dtype=torch.long)
    target[0, 2:10, 2:12] = 1  # rbc
    target[0, 12:22, 8:20] = 2  # wbc cytoplasm
    target[0, 15:19, 11:16] = 3  # nucleus
    target[0, 4:6, 18:20] = 4  # platelet
    logits = torch.zeros(1, C, 24, 24, requires_grad=True)
    loss = build_loss(DEFAULT_LOSS)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(100):
        optimiser.zero_grad()
        loss(logits, target).backward()
        optimiser.step()
    cm = ConfusionMatrix(C)
    cm.update(logits.argmax(1), target)
    assert cm.summary()["mean_dice"] > 0.95
    assert loss.last_parts["dice"] < 0.1
