"""A model's extra clean-up: tissue stuck to the head is cut away, the head itself is left as it is."""

from __future__ import annotations

import numpy as np
import pytest

from FetalHeadSegLib.inference.postprocessing import (
    PostprocessingConfig,
    clean_label_map,
    decide_labels,
    detach_attached_tissue,
    keep_largest_component,
)


def ball_grid(shape: tuple[int, ...], spacing_mm: tuple[float, ...]) -> np.ndarray:
    """Voxel centres in mm, (ndim, *shape)."""
    axes = [np.arange(n) * s for n, s in zip(shape, spacing_mm, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def inside_ellipsoid(grid: np.ndarray, centre_mm: tuple[float, ...], semi_axes_mm: tuple[float, ...]) -> np.ndarray:
    return sum(((grid[a] - centre_mm[a]) / semi_axes_mm[a]) ** 2 for a in range(grid.shape[0])) <= 1.0


@pytest.mark.parametrize("spacing_mm", [(1.0, 1.0, 1.0), (0.7, 0.7, 1.6)])
def test_a_blob_hanging_on_the_head_falls_off_and_the_head_stays_whole(spacing_mm: tuple[float, ...]) -> None:
    """Head: an ellipsoid with axis ratio 1.4 (smallest radius of curvature 0.55 of its equivalent radius);
    blob: a ball of radius 9 mm overlapping it by 3 mm (a neck narrower than the opening ball)."""
    grid = ball_grid(tuple(int(80 / s) for s in spacing_mm), spacing_mm)
    head = inside_ellipsoid(grid, (40.0, 44.0, 40.0), (21.0, 15.0, 16.0))
    blob = inside_ellipsoid(grid, (40.0, 23.0, 40.0), (9.0, 9.0, 9.0))
    assert (head & blob).any()  # attached
    kept = detach_attached_tissue(head | blob, spacing_mm, 0.5)
    np.testing.assert_array_equal(kept & head, head)  # not one head voxel lost
    # the blob is gone but for the fillet an opening leaves at the neck (about 3 mm, one coarse voxel more)
    far_from_head = blob & ~inside_ellipsoid(grid, (40.0, 44.0, 40.0), (24.0, 18.0, 19.0))
    assert far_from_head.sum() * np.prod(spacing_mm) > 1000.0  # mm^3
    assert (kept & far_from_head).sum() <= 0.01 * far_from_head.sum()
    np.testing.assert_array_equal(detach_attached_tissue(head, spacing_mm, 0.5), head)  # a head alone: as it is


def test_a_head_cut_by_the_image_edge_keeps_its_cut_side() -> None:
    spacing_mm = (1.0, 1.0, 1.0)
    grid = ball_grid((60, 60, 60), spacing_mm)
    head = inside_ellipsoid(grid, (30.0, 8.0, 30.0), (18.0, 15.0, 16.0))  # cut at y = 0
    assert head[:, 0, :].any()
    np.testing.assert_array_equal(detach_attached_tissue(head, spacing_mm, 0.5), head)


def test_frames_are_opened_in_their_plane() -> None:
    spacing_mm = (0.5, 0.5, 1.0)
    grid = ball_grid((160, 160), spacing_mm[:2])
    head = inside_ellipsoid(grid, (40.0, 45.0), (30.0, 22.0))
    blob = inside_ellipsoid(grid, (40.0, 15.0), (10.0, 10.0))
    kept = detach_attached_tissue((head | blob)[:, :, np.newaxis], spacing_mm, 0.5)[:, :, 0]
    np.testing.assert_array_equal(kept & head, head)
    assert not (kept & blob & ~inside_ellipsoid(grid, (40.0, 45.0), (33.0, 25.0))).any()


def test_the_setting_is_checked_and_round_trips() -> None:
    assert PostprocessingConfig.from_dict(None) == PostprocessingConfig(None, None)
    for config in (PostprocessingConfig(0.5), PostprocessingConfig(0.5, 0.4), PostprocessingConfig(None, 0.3)):
        assert PostprocessingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="detach_fraction must lie between 0 and 1"):
        PostprocessingConfig(1.5)
    with pytest.raises(ValueError, match="head_threshold must lie between 0 and 1"):
        PostprocessingConfig(None, 1.0)


def test_a_head_threshold_moves_a_faint_border_and_leaves_a_sharp_one() -> None:
    """A disc of radius 30 px centred at x = 60.5 whose probability falls as a logistic of the distance from its
    border, steeply on the left (width 0.2 px: a bright skull) and gently on the right (width 4 px: skull along the
    beam). The 0.5 level is the border on both sides (x = 30.5 and 90.5); the 0.4 level lies 0.2 * logit(0.6) =
    0.08 px further out on the left (x = 30.42: the same voxels) and 4 * logit(0.6) = 1.62 px on the right
    (x = 92.12: two voxels more)."""
    x, y = np.meshgrid(np.arange(120.0), np.arange(120.0), indexing="ij")
    radius = np.hypot(x - 60.5, y - 60.0)
    width = np.where(x < 60.5, 0.2, 4.0)
    head = 1.0 / (1.0 + np.exp(-(30.0 - radius) / width))
    probabilities = np.stack([1.0 - head, head])[..., np.newaxis]
    plain = decide_labels(probabilities, 1)[:, 60, 0]
    np.testing.assert_array_equal(plain, np.argmax(probabilities, axis=0)[:, 60, 0])
    lowered = decide_labels(probabilities, 1, 0.4)[:, 60, 0]
    left_plain, right_plain = np.flatnonzero(plain)[[0, -1]]
    left_lowered, right_lowered = np.flatnonzero(lowered)[[0, -1]]
    assert (left_plain, right_plain) == (31, 90)
    assert (left_lowered, right_lowered) == (31, 92)
    assert lowered.dtype == np.uint8


def test_a_head_threshold_gives_the_voxels_it_does_not_take_to_the_likeliest_other_class() -> None:
    """Three classes (background, symphysis, head = 2): a voxel whose head probability is below the threshold
    goes to whichever of the other two is likelier, even where the head would win the plain argmax."""
    probabilities = np.array(
        [[0.30, 0.20, 0.50], [0.25, 0.35, 0.40], [0.10, 0.20, 0.70], [0.60, 0.05, 0.35]]
    ).T.reshape(3, 4, 1, 1)
    np.testing.assert_array_equal(decide_labels(probabilities, 2)[:, 0, 0], [2, 2, 2, 0])
    np.testing.assert_array_equal(decide_labels(probabilities, 2, 0.45)[:, 0, 0], [2, 1, 2, 0])
    np.testing.assert_array_equal(decide_labels(probabilities, 2, 0.3)[:, 0, 0], [2, 2, 2, 2])


def test_the_component_kept_is_the_one_holding_the_most_probability() -> None:
    """Two discs in a frame: a doubtful one (p = 0.6, radius 22 px) and a sure one (p = 0.95, radius 20 px). By
    voxel count the doubtful one is larger (1.21 times); by probability mass (its expected head voxels) the sure
    one is (0.95 * 400 > 0.6 * 484)."""
    grid = ball_grid((128, 64), (1.0, 1.0))
    doubtful = inside_ellipsoid(grid, (30.0, 32.0), (22.0, 22.0))
    sure = inside_ellipsoid(grid, (95.0, 32.0), (20.0, 20.0))
    head_probability = np.where(doubtful, 0.6, np.where(sure, 0.95, 0.02))[:, :, np.newaxis]
    mask = head_probability > 0.5
    np.testing.assert_array_equal(keep_largest_component(mask), doubtful[:, :, np.newaxis])
    np.testing.assert_array_equal(keep_largest_component(mask, head_probability), sure[:, :, np.newaxis])
    probabilities = np.stack([1.0 - head_probability, head_probability])
    labels = clean_label_map(mask.astype(np.uint8), [1], probabilities)
    np.testing.assert_array_equal(labels[:, :, 0] == 1, sure)


def test_the_convex_hull_fills_a_dent_in_an_ellipsoid_and_adds_nothing_outside_it() -> None:
    """An ellipsoid (radii 20, 15, 12 voxels) missing a bite from its flank (a shadowed stretch of skull): the hull
    fills the bite up to the chord between its rims (the cap beyond the chord is beyond any hull: 84 % of the bite
    here) and adds nothing further than a voxel outside the ellipsoid; a frame's ellipse with a notch is filled in
    its plane."""
    from FetalHeadSegLib.inference.postprocessing import convex_hull

    grid = ball_grid((50, 40, 34), (1.0, 1.0, 1.0))
    whole = inside_ellipsoid(grid, (25.0, 20.0, 17.0), (20.0, 15.0, 12.0))
    bitten = whole & ~((grid[1] > 28.0) & (np.abs(grid[0] - 25.0) < 8.0))
    bite = whole & ~bitten
    hull = convex_hull(bitten)
    assert bite.sum() > 1000 and (hull & bite).sum() >= 0.8 * bite.sum()
    outer = inside_ellipsoid(grid, (25.0, 20.0, 17.0), (21.0, 16.0, 13.0))
    assert not (hull & ~outer).any() and (hull & bitten).sum() == bitten.sum()
    frame = inside_ellipsoid(ball_grid((60, 50), (1.0, 1.0)), (30.0, 25.0), (22.0, 18.0))
    notched = frame.copy()
    notched[20:40, 35:] = False
    filled = convex_hull(notched[:, :, np.newaxis])
    assert filled.shape == (60, 50, 1)
    assert filled[25:35, 35:40, 0].all() and not filled[:, 43:, 0].any()


def test_a_flat_mask_is_its_own_hull() -> None:
    """Voxels in one plane of a 3D grid hold no further voxel centre in their hull; an empty mask stays empty."""
    from FetalHeadSegLib.inference.postprocessing import convex_hull

    flat = np.zeros((20, 20, 20), dtype=bool)
    flat[5:15, 5:15, 10] = True
    np.testing.assert_array_equal(convex_hull(flat), flat)
    empty = np.zeros((10, 10, 10), dtype=bool)
    assert not convex_hull(empty).any()


def test_a_fine_volume_is_opened_on_a_coarser_grid_and_keeps_its_own_border(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 0.25 mm the opening runs on 0.5 mm blocks: the head loses no voxel, the blob falls off as with the exact
    opening (the oracle), and what differs from it is a thin shell of the fillet at the neck."""
    from scipy import ndimage

    from FetalHeadSegLib.inference import postprocessing

    spacing_mm = (0.25, 0.25, 0.25)
    grid = ball_grid((216, 224, 176), spacing_mm)
    head = inside_ellipsoid(grid, (27.0, 33.0, 22.0), (21.0, 15.0, 16.0))
    blob = inside_ellipsoid(grid, (27.0, 12.0, 22.0), (9.0, 9.0, 9.0))
    kept = detach_attached_tissue(head | blob, spacing_mm, 0.5)
    np.testing.assert_array_equal(kept & head, head)
    far_from_head = blob & ~inside_ellipsoid(grid, (27.0, 33.0, 22.0), (24.0, 18.0, 19.0))
    assert (kept & far_from_head).sum() <= 0.01 * far_from_head.sum()
    monkeypatch.setattr(postprocessing, "OPENING_EXACT_VOXELS", head.size)
    exact = detach_attached_tissue(head | blob, spacing_mm, 0.5)
    assert not (exact & ~kept).any()  # the coarse grid cuts nothing the exact opening keeps
    # and what it keeps beyond it lies within three 0.5 mm blocks of it (the one-block margin, a block's diagonal)
    beyond_mm = ndimage.distance_transform_edt(~exact, sampling=spacing_mm)[kept & ~exact]
    assert beyond_mm.size and beyond_mm.max() <= 1.5
