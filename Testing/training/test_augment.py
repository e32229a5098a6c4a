"""Training augmentations: deterministic for a seed, and each does what it says to the image and the label."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.augment import (
    AugmentConfig,
    AugmentParams,
    Box,
    apply,
    rotate_scale,
    sample_erasing_box,
    sample_params,
    shadow_mask,
)


def sample(shape=(32, 24, 16), channels=1, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random((channels, *shape)).astype(np.float32) * 0.8 + 0.1
    label = np.zeros(shape, np.uint8)
    label[8:20, 6:18, 4:12] = 1
    return image, label


def test_same_seed_same_augmentation() -> None:
    image, label = sample()
    first = apply(sample_params(np.random.default_rng(5), AugmentConfig(), label.shape, 1), image, label)
    again = apply(sample_params(np.random.default_rng(5), AugmentConfig(), label.shape, 1), image, label)
    other = apply(sample_params(np.random.default_rng(6), AugmentConfig(), label.shape, 1), image, label)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_random_erasing_box_follows_the_method() -> None:
    shape = (64, 48, 40)
    rng = np.random.default_rng(1)
    for _ in range(200):
        box = sample_erasing_box(rng, shape, (0.02, 0.4), 0.3)
        assert box is not None
        assert all(0 <= s and s + n <= limit for s, n, limit in zip(box.start, box.size, shape, strict=True))
        fraction = float(np.prod(box.size)) / float(np.prod(shape))
        assert 0.015 < fraction < 0.45
        sizes = sorted(box.size)
        assert sizes[-1] / sizes[0] <= (1 / 0.3) * 1.15  # pairwise edge ratios within [0.3, 3.3], up to rounding


def test_erasing_fills_the_box_and_leaves_the_label() -> None:
    image, label = sample()
    box = Box((2, 3, 4), (10, 8, 6))
    zeroed, kept_label = apply(AugmentParams(erase_box=box, erase_noise=False), image, label)
    assert (zeroed[0][box.slices()] == 0).all()
    outside = np.ones(label.shape, bool)
    outside[box.slices()] = False
    np.testing.assert_array_equal(zeroed[0][outside], image[0][outside])
    np.testing.assert_array_equal(kept_label, label)
    noisy, _ = apply(AugmentParams(erase_box=box, erase_noise=True, noise_seed=3), image, label)
    region = noisy[0][box.slices()]
    assert 0.4 < region.mean() < 0.6 and region.std() > 0.2  # U(0, 1)


def test_context_channel_is_erased_independently() -> None:
    image, label = sample(channels=2)
    box = Box((0, 0, 0), (5, 5, 5))
    out, _ = apply(AugmentParams(erase_context_box=box), image, label)
    assert (out[1][box.slices()] == 0).all()
    np.testing.assert_array_equal(out[0], image[0])


def test_flips_move_image_and_label_together() -> None:
    image, label = sample()
    out_image, out_label = apply(AugmentParams(flips=(True, False, True)), image, label)
    np.testing.assert_array_equal(out_label, label[::-1, :, ::-1])
    np.testing.assert_array_equal(out_image[0], image[0][::-1, :, ::-1])


def test_flip_axes_limit_which_axes_a_flip_mirrors() -> None:
    """An intrapartum frame may be mirrored left-right but never top-bottom (the probe stays at the top)."""
    lateral_only = AugmentConfig(flip_p=1.0, flip_axes=(0,))
    for seed in range(20):
        assert sample_params(np.random.default_rng(seed), lateral_only, (32, 24, 1), 1).flips == (True, False, False)
    every = sample_params(np.random.default_rng(0), AugmentConfig(flip_p=1.0), (32, 24, 16), 1).flips
    assert every == (True, True, True)
    assert AugmentConfig.from_dict({"flip_axes": [0]}).flip_axes == (0,)


def test_rotation_and_scaling_keep_the_label_area_as_expected() -> None:
    label = np.zeros((64, 64, 1), np.uint8)
    label[16:48, 24:40, 0] = 1
    rotated = rotate_scale(label, (0.0, 0.0, math.radians(30)), 1.0, order=0)
    assert rotated.sum() == pytest.approx(label.sum(), rel=0.05)
    assert set(np.unique(rotated)) <= {0, 1}
    scaled = rotate_scale(label, (0.0, 0.0, 0.0), 1.2, order=0)
    assert scaled.sum() == pytest.approx(label.sum() * 1.44, rel=0.06)


def test_intensity_changes_the_image_only() -> None:
    image, label = sample()
    brighter, same_label = apply(AugmentParams(gamma=0.5, gain=0.05), image, label)
    assert brighter[0].mean() > image[0].mean()
    np.testing.assert_array_equal(same_label, label)
    speckled, _ = apply(AugmentParams(speckle_sigma=0.2, noise_seed=1), image, label)
    assert not np.allclose(speckled[0], image[0])


def test_shadows_darken_the_image_behind_a_depth() -> None:
    mask = shadow_mask(np.random.default_rng(4), (64, 48, 32))
    assert set(np.unique(mask)) <= {0.0, 1.0}
    first_hole_depth = np.argmax((mask == 0).any(axis=(0, 2)))
    assert (mask[:, :first_hole_depth] == 1).all()  # a shadow starts at a depth and continues along the beam
    image, label = sample()
    out, out_label = apply(AugmentParams(shadow_seed=4), image, label)
    assert out[0].sum() <= image[0].sum()
    np.testing.assert_array_equal(out_label, label)
    frame = shadow_mask(np.random.default_rng(2), (256, 256, 1))
    assert frame.shape == (256, 256, 1) and 0 < frame.mean() <= 1


def test_none_config_changes_nothing() -> None:
    image, label = sample()
    params = sample_params(np.random.default_rng(0), AugmentConfig.none(), label.shape, 1)
    out_image, out_label = apply(params, image, label)
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_label, label)
