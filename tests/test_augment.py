"""Tests of the training data augmentation (smearscan.augment)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from smearscan.augment import IGNORE_INDEX, AugmentConfig, augment
from smearscan.errors import ConfigError

#: A config with every geometric transform strong, to stress label handling at the borders.
STRONG_GEOMETRY = AugmentConfig(
    max_rotation_deg=45.0,
    scale_range=(0.7, 1.3),
    brightness=0.0,
    contrast=0.0,
    hue_shift_deg=0.0,
    saturation=0.0,
    stain_jitter=0.0,
    blur_sigma_max=0.0,
    noise_sigma_max=0.0,
)


def _sample(
    height: int = 96, width: int = 96, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smear-like sample: pink background, a few discs of label 3 drawn bright red."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[...] = (60, 170, 200)
    image += rng.integers(0, 20, size=image.shape, dtype=np.uint8)
    target = np.zeros((height, width), np.uint8)
    for _ in range(4):
        centre = (int(rng.integers(15, width - 15)), int(rng.integers(15, height - 15)))
        radius = int(rng.integers(6, 12))
        cv2.circle(target, centre, radius, 3, thickness=-1)
    image[target == 3, 0] = 250
    weight = rng.choice(np.array([0.25, 0.5, 1.0], np.float32), size=(height, width))
    return image, target, weight


def _run(
    config: AugmentConfig, seed: int, sample: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return augment(*sample, np.random.default_rng(seed), config)


@pytest.mark.parametrize("shape", [(96, 96), (64, 100)])
@pytest.mark.parametrize("seed", range(4))
def test_shapes_and_dtypes_preserved(shape: tuple[int, int], seed: int) -> None:
    sample = _sample(*shape)
    image, target, weight = _run(AugmentConfig(), seed, sample)
    assert image.shape == (*shape, 3) and image.dtype == np.uint8
    assert target.shape == shape and target.dtype == np.uint8
    assert weight.shape == shape and weight.dtype == np.float32


def test_inputs_not_modified() -> None:
    sample = _sample()
    copies = tuple(a.copy() for a in sample)
    _run(AugmentConfig(), 1, sample)
    for before, after in zip(copies, sample, strict=True):
        np.testing.assert_array_equal(before, after)


def test_same_seed_same_output_different_seed_differs() -> None:
    sample = _sample()
    first = _run(AugmentConfig(), 7, sample)
    again = _run(AugmentConfig(), 7, sample)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = _run(AugmentConfig(), 8, sample)
    assert not np.array_equal(first[0], other[0])


def test_none_config_is_exact_identity() -> None:
    sample = _sample(64, 80)
    out = _run(AugmentConfig.none(), 3, sample)
    for a, b in zip(sample, out, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b)


@pytest.mark.parametrize("seed", range(10))
def test_labels_are_never_interpolated(seed: int) -> None:
    image, target, weight = _sample(seed=seed)
    _, out_target, out_weight = augment(
        image, target, weight, np.random.default_rng(seed), STRONG_GEOMETRY
    )
    assert set(np.unique(out_target).tolist()) <= {0, 3, IGNORE_INDEX}
    assert set(np.unique(out_weight).tolist()) <= {0.0, 0.25, 0.5, 1.0}
    # Pixels brought in from outside are ignored: weight 0 wherever the target became 255.
    assert np.all(out_weight[out_target == IGNORE_INDEX] == 0.0)
    # And only there: the weight is never 0 on a labelled pixel (the input weight is > 0).
    assert np.all(out_weight[out_target != IGNORE_INDEX] > 0.0)


def test_rotation_brings_in_ignored_border() -> None:
    sample = _sample()
    config = AugmentConfig(
        flips=False,
        rot90=False,
        max_rotation_deg=45.0,
        scale_range=(0.8, 0.8),
        **{k: 0.0 for k in ("brightness", "contrast", "hue_shift_deg", "saturation")},
        stain_jitter=0.0,
        blur_sigma_max=0.0,
        noise_sigma_max=0.0,
    )
    _, target, weight = _run(config, 0, sample)
    border = target == IGNORE_INDEX
    assert border[0, 0] and border.sum() > 0.05 * border.size
    assert np.all(weight[border] == 0.0)


@pytest.mark.parametrize("config", [AugmentConfig.geometric_only(), STRONG_GEOMETRY])
@pytest.mark.parametrize("seed", range(8))
def test_geometric_transforms_keep_image_and_labels_aligned(
    config: AugmentConfig, seed: int
) -> None:
    sample = _sample(seed=seed)
    image, target, _ = _run(config, seed, sample)
    valid = target != IGNORE_INDEX
    bright = (image[..., 0] > 150) & valid
    labelled = (target == 3) & valid
    iou = (bright & labelled).sum() / (bright | labelled).sum()
    assert iou > 0.9


def test_photometric_only_leaves_target_and_weight_unchanged() -> None:
    sample = _sample()
    config = AugmentConfig.photometric_only()
    changed = 0
    for seed in range(5):
        image, target, weight = _run(config, seed, sample)
        np.testing.assert_array_equal(target, sample[1])
        np.testing.assert_array_equal(weight, sample[2])
        changed += int(not np.array_equal(image, sample[0]))
    assert changed == 5


@pytest.mark.parametrize(
    "field",
    ["stain_jitter", "brightness", "contrast", "hue_shift_deg", "saturation", "blur_sigma_max"],
)
def test_each_photometric_transform_alone_changes_only_the_image(field: str) -> None:
    values = {"blur_sigma_max": 2.0, "hue_shift_deg": 30.0}
    config = AugmentConfig(
        flips=False,
        rot90=False,
        max_rotation_deg=0.0,
        scale_range=(1.0, 1.0),
        **{
            k: 0.0
            for k in (
                "brightness",
                "contrast",
                "hue_shift_deg",
                "saturation",
                "stain_jitter",
                "blur_sigma_max",
                "noise_sigma_max",
            )
            if k != field
        },
        **{field: values.get(field, 0.5)},
    )
    sample = _sample()
    outputs = [_run(config, seed, sample) for seed in range(6)]
    assert any(not np.array_equal(image, sample[0]) for image, _, _ in outputs)
    for _, target, weight in outputs:
        np.testing.assert_array_equal(target, sample[1])
        np.testing.assert_array_equal(weight, sample[2])


def test_stain_jitter_keeps_colours_plausible() -> None:
    # Mean colour moves, but only moderately with the default jitter.
    sample = _sample()
    config = AugmentConfig(
        flips=False,
        rot90=False,
        max_rotation_deg=0.0,
        scale_range=(1.0, 1.0),
        brightness=0.0,
        contrast=0.0,
        hue_shift_deg=0.0,
        saturation=0.0,
        blur_sigma_max=0.0,
        noise_sigma_max=0.0,
    )
    before = sample[0].reshape(-1, 3).mean(axis=0)
    for seed in range(5):
        image, _, _ = _run(config, seed, sample)
        after = image.reshape(-1, 3).mean(axis=0)
        assert np.all(np.abs(after - before) < 40.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_rotation_deg": -1.0},
        {"max_rotation_deg": 200.0},
        {"scale_range": (1.1, 0.9)},
        {"scale_range": (0.0, 1.0)},
        {"scale_range": (1.0,)},
        {"brightness": -0.1},
        {"contrast": 1.0},
        {"hue_shift_deg": float("nan")},
        {"saturation": -0.5},
        {"stain_jitter": 1.5},
        {"blur_sigma_max": -0.1},
        {"noise_sigma_max": float("inf")},
        {"noise_sigma_max": "3"},
        {"flips": "yes"},
    ],
)
def test_invalid_config_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AugmentConfig(**kwargs)  # type: ignore[arg-type]


def test_config_is_normalised_and_frozen() -> None:
    config = AugmentConfig(scale_range=[0.8, 1.2], max_rotation_deg=10)  # type: ignore[arg-type]
    assert config.scale_range == (0.8, 1.2)
    assert isinstance(config.max_rotation_deg, float)
    with pytest.raises(AttributeError):
        config.flips = False  # type: ignore[misc]


def test_bad_arrays_raise_value_error() -> None:
    image, target, weight = _sample()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        augment(image[..., :2], target, weight, rng, AugmentConfig())
    with pytest.raises(ValueError):
        augment(image, target.astype(np.int64), weight, rng, AugmentConfig())
    with pytest.raises(ValueError):
        augment(image, target, weight.astype(np.float64), rng, AugmentConfig())


@pytest.mark.parametrize("shape", [(40, 40), (36, 52)])
def test_flips_and_rot90_alone_are_exact_symmetries(shape: tuple[int, int]) -> None:
    image, target, weight = _sample(*shape)
    config = AugmentConfig(
        max_rotation_deg=0.0,
        scale_range=(1.0, 1.0),
        brightness=0.0,
        contrast=0.0,
        hue_shift_deg=0.0,
        saturation=0.0,
        stain_jitter=0.0,
        blur_sigma_max=0.0,
        noise_sigma_max=0.0,
    )
    symmetries = [np.rot90(t, k) for t in (target, target[:, ::-1]) for k in range(4)]
    symmetries = [s for s in symmetries if s.shape == shape]
    for seed in range(8):
        out_image, out_target, out_weight = _run(config, seed, (image, target, weight))
        assert any(np.array_equal(out_target, s) for s in symmetries)
        # The same symmetry was applied to the image: its red channel still encodes label 3.
        np.testing.assert_array_equal(out_image[..., 0] == 250, out_target == 3)
        assert set(np.unique(out_weight).tolist()) <= {0.25, 0.5, 1.0}
