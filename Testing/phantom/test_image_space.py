"""The image-space phantom generator: deterministic given a seed, exact truth (the head mask against the egg's
closed-form volume and its defining inequality), the grid and levels it is asked for, a field of view that is
black outside."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest

from FetalHeadSegLib.phantom.image_space import (
    LEVEL_RANGES_DB,
    ImageSpaceCase,
    egg_level,
    egg_volume_mm3,
    generate_image_space,
)

SEED = 9_600_000
SIZE = (48, 44, 40)


@lru_cache(maxsize=8)
def _case(seed: int, size: tuple[int, int, int] | None = SIZE, skull_db: float | None = None) -> ImageSpaceCase:
    return generate_image_space(seed, size=size, levels_db=None if skull_db is None else {"skull": skull_db})


def test_the_same_seed_draws_the_same_volume_and_another_seed_another() -> None:
    first, again, other = _case(SEED), generate_image_space(SEED, size=SIZE), _case(SEED + 1)
    assert np.array_equal(first.image.array, again.image.array)
    assert np.array_equal(first.head_mask.array, again.head_mask.array)
    assert first.settings == again.settings
    assert not np.array_equal(first.image.array, other.image.array)


def test_egg_volume_in_closed_form_matches_numerical_integration_of_its_sections() -> None:
    semi, taper = np.array([50.0, 40.0, 44.0]), 0.12
    x = np.linspace(-semi[0], semi[0], 200_001)
    areas = math.pi * semi[1] * semi[2] * (1.0 + taper * x / semi[0]) ** 2 * (1.0 - (x / semi[0]) ** 2)
    numeric = float(np.sum((areas[1:] + areas[:-1]) / 2.0) * (x[1] - x[0]))  # trapezoids over the sections
    assert egg_volume_mm3(semi, taper) == pytest.approx(numeric, rel=1e-6)
    assert egg_volume_mm3(semi, 0.0) == pytest.approx(4.0 / 3.0 * math.pi * 50.0 * 40.0 * 44.0)


def test_egg_without_taper_is_the_ellipsoid_and_with_taper_its_back_is_wider() -> None:
    semi = np.array([50.0, 40.0, 44.0])
    assert egg_level(np.array([0.0, 40.0, 0.0]), semi, 0.0) == pytest.approx(1.0)
    assert egg_level(np.array([50.0, 0.0, 0.0]), semi, 0.3) == pytest.approx(1.0)  # the long axis is unchanged
    # Half way to the wide end the section is wider than half way to the narrow end.
    back, front = np.array([25.0, 36.0, 0.0]), np.array([-25.0, 36.0, 0.0])
    assert egg_level(back, semi, 0.1) < 1.0 < egg_level(front, semi, 0.1)


def test_the_head_mask_holds_the_egg_whose_volume_the_settings_give() -> None:
    case = generate_image_space(SEED + 2)  # the drawn grid, 80-112 voxels per axis
    voxel_mm3 = float(np.prod(case.image.spacing_mm))
    counted_ml = case.head_mask.array.sum() * voxel_mm3 / 1000.0
    assert counted_ml == pytest.approx(case.settings["head_volume_ml"], rel=0.02)
    assert case.image.shape == tuple(case.settings["shape"])
    assert all(80 <= n <= 112 for n in case.image.shape)


def test_a_given_grid_is_used_and_the_rest_of_the_draw_is_unchanged() -> None:
    small, drawn = _case(SEED), _case(SEED, None)
    assert small.image.shape == SIZE and small.head_mask.shape == SIZE
    for key in ("head_semi_axes_mm", "taper", "head_volume_ml", "levels_db", "cavity_over_head", "cone"):
        assert small.settings[key] == drawn.settings[key]
    # The spacing follows the grid: the field of view spans the same multiple of the head's length.
    ratio = np.array(small.settings["spacing_mm"]) / np.array(drawn.settings["spacing_mm"])
    assert ratio[0] == pytest.approx(max(drawn.image.shape[:2]) / max(SIZE[:2]), rel=1e-3)


def test_echo_levels_are_drawn_within_their_ranges_and_a_given_level_replaces_the_drawn_one() -> None:
    for seed in range(SEED, SEED + 4):
        for tissue, value in _case(seed).settings["levels_db"].items():
            low, high = LEVEL_RANGES_DB[tissue]
            assert low <= value <= high
    faint, bright = _case(SEED + 3, SIZE, -14.0), _case(SEED + 3, SIZE, 0.0)
    assert bright.settings["levels_db"]["skull"] == 0.0
    skull = (bright.head_mask.array != 0) & (bright.field_of_view.array != 0)
    # Same seed, same speckle: only the skull's level differs, so the head's border is brighter (14 dB ~ 5x).
    assert bright.image.array[skull].mean() > faint.image.array[skull].mean() + 5
    with pytest.raises(ValueError, match="unknown tissues"):
        generate_image_space(SEED, size=SIZE, levels_db={"bone": 0.0})


def test_outside_the_field_of_view_is_black_and_the_imaged_share_of_the_head_is_reported() -> None:
    cones = [case for case in (_case(seed) for seed in range(SEED, SEED + 6)) if case.settings["cone"]]
    assert cones, "70 % of the cases have a cone"
    for case in cones:
        outside = case.field_of_view.array == 0
        assert outside.any() and not case.image.array[outside].any()
        head = case.head_mask.array != 0
        imaged = (case.field_of_view.array != 0)[head].mean()
        assert case.settings["head_imaged_fraction"] == pytest.approx(imaged, abs=1e-4)
    assert _case(SEED).image.array.dtype == np.uint8
