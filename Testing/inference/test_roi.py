"""The coarse-to-fine cascade: boxes carried between grids, exact crops and pastes, physical working grids
without distortion, and the engine's roi mode end to end on a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.inference.cascade import CascadeConfig, CascadeMode
from FetalHeadSegLib.inference.engine import InferenceOptions, load_model
from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig, prepare, to_working_grid
from FetalHeadSegLib.inference.roi import Box, box_on_grid, crop, foreground_box, paste

from shapes import make_ellipsoid, rotation_matrix
from tiny_models import make_tiny_bundle

OBLIQUE = rotation_matrix((0.3, 1.0, 0.4), 0.6)


def test_crop_keeps_every_voxel_where_it_was_and_paste_puts_it_back() -> None:
    rng = np.random.default_rng(1)
    image = Image(rng.random((30, 24, 18)).astype(np.float32), make_ijk_to_ras((0.7, 0.5, 1.4), (3, -2, 9), OBLIQUE))
    box = Box((4, 6, 2), (21, 20, 15))
    region = crop(image, box)
    np.testing.assert_array_equal(region.array, image.array[4:21, 6:20, 2:15])
    for ijk in ([0, 0, 0], [16, 13, 12], [5, 2, 7]):
        np.testing.assert_allclose(
            region.ijk_to_ras_points(ijk), image.ijk_to_ras_points(np.add(ijk, box.start)), atol=1e-9
        )
    pasted = paste(np.zeros((2, *image.shape), np.float32), box, np.stack([region.array, region.array + 1]))
    np.testing.assert_array_equal(pasted[0][box.slices], region.array)
    outside = np.ones(image.shape, bool)
    outside[box.slices] = False
    assert not pasted[:, outside].any()
    with pytest.raises(ValueError):
        paste(pasted, box, region.array[:-1])


def test_foreground_box_grows_by_the_margin_in_mm_and_stays_inside() -> None:
    mask = np.zeros((40, 30, 20), np.uint8)
    mask[10:20, 5:15, 8:12] = 1
    image = Image(mask, make_ijk_to_ras((0.5, 1.0, 2.0)))
    box = foreground_box(image, margin_mm=3.0)
    assert box == Box((4, 2, 6), (26, 18, 14))
    assert foreground_box(image.with_array(np.zeros_like(mask)), 3.0) is None
    assert foreground_box(image, 100.0) == Box((0, 0, 0), (40, 30, 20))
    frame = Image(mask[:, :, 9:10], make_ijk_to_ras((0.5, 1.0, 1.0)))
    assert foreground_box(frame, 3.0) == Box((4, 2, 0), (26, 18, 1))  # a frame is never grown out of its plane


def test_a_box_carried_to_another_grid_covers_the_same_region() -> None:
    fine = Image(np.zeros((60, 50, 40), np.float32), make_ijk_to_ras((0.5, 0.5, 0.5), (1, 2, 3), OBLIQUE))
    coarse = to_working_grid(
        fine.with_array(np.random.default_rng(0).random(fine.shape).astype(np.float32)),
        PreprocessingConfig(target_spacing_mm=(1.5,)),
    )
    box = Box((5, 4, 3), (12, 11, 9))
    carried = box_on_grid(box, coarse, fine)
    corners = coarse.ijk_to_ras_points(np.array([box.start, np.subtract(box.stop, 1)], float))
    inside = (np.c_[corners, np.ones(2)] @ fine.ras_to_ijk().T)[:, :3]
    assert np.all(inside >= np.array(carried.start) - 0.5) and np.all(inside <= np.array(carried.stop) - 0.5)
    assert carried.shape[0] <= (box.shape[0] * 1.5 / 0.5) + 4  # no bigger than the region plus a voxel each side


@pytest.mark.parametrize("direction", [None, OBLIQUE])
def test_a_physical_working_grid_never_distorts_an_anisotropic_volume(direction) -> None:
    head = make_ellipsoid((24.0, 18.0, 14.0), spacing_mm=(0.4, 0.4, 1.2), direction_ras=direction)
    working = to_working_grid(head.image, PreprocessingConfig(target_spacing_mm=(1.0,)))
    assert working.spacing_mm == pytest.approx((1.0, 1.0, 1.0), rel=1e-6)
    extent = np.asarray(head.image.shape) * np.asarray(head.image.spacing_mm)
    assert np.asarray(working.shape) * 1.0 == pytest.approx(extent, abs=1.0)
    weights = working.array / working.array.sum()
    centre = (np.argwhere(np.ones(working.shape)) * weights.reshape(-1, 1)).sum(axis=0)
    original = head.image.array / head.image.array.sum()
    centre_in = (np.argwhere(np.ones(head.image.shape)) * original.reshape(-1, 1)).sum(axis=0)
    np.testing.assert_allclose(working.ijk_to_ras_points(centre), head.image.ijk_to_ras_points(centre_in), atol=0.6)


def _roi_model(tmp_path: Path, dimension: int = 3, convex_context: bool = True):
    levels = (PreprocessingConfig(target_spacing_mm=(2.0,)), PreprocessingConfig(max_size=24))
    cascade = CascadeConfig(CascadeMode.ROI, levels, roi_margin_mm=4.0, convex_context=convex_context)
    return load_model(make_tiny_bundle(tmp_path / "roi", dimension=dimension, cascade=cascade), "cpu")


def test_the_roi_cascade_runs_on_the_exact_input_grid_with_and_without_flips(tmp_path: Path) -> None:
    model = _roi_model(tmp_path)
    head = make_ellipsoid((22.0, 17.0, 13.0), rotation=OBLIQUE, spacing_mm=(0.8, 0.9, 1.3), direction_ras=OBLIQUE)
    noise = np.random.default_rng(2).random(head.image.shape).astype(np.float32)
    image = head.image.with_array(head.image.array * 2.0 + noise)
    for tta in (False, True):
        stages: set[str] = set()
        result = model.segment(
            image, InferenceOptions(tta=tta, biometry=False), lambda s, f, m, seen=stages: seen.add(s)
        )
        assert {"stage1", "stage2"} <= stages  # level 2 ran on the region level 1 found
        assert result.labels.shape == result.probability.shape == image.shape
        np.testing.assert_allclose(result.labels.ijk_to_ras, image.ijk_to_ras)
        assert (result.uncertainty is not None) == tta
        if result.uncertainty is not None:
            assert 0.0 <= result.uncertainty.array.min() and result.uncertainty.array.max() <= 0.5


def test_the_roi_bundle_round_trips_its_cascade(tmp_path: Path) -> None:
    from FetalHeadSegLib.models.bundle import read_bundle

    model = _roi_model(tmp_path)
    again = read_bundle(model.bundle.path)
    assert again.cascade == model.bundle.cascade and again.cascade.mode is CascadeMode.ROI
    prepared = prepare(
        Image(np.ones((30, 30, 30), np.float32), make_ijk_to_ras((1.0, 1.0, 1.0))),
        again.cascade.level_preprocessing[0],
        8,
    )
    assert prepared.working.spacing_mm == pytest.approx((2.0, 2.0, 2.0))


def test_the_finer_level_looks_at_the_largest_region_of_each_class_not_at_false_blobs() -> None:
    """A coarse level that also marked a small blob at the far edge: the region is the head alone (the box would
    otherwise span the volume); with a second class (symphysis), its largest region is kept as well."""
    from FetalHeadSegLib.inference.roi_cascade import coarse_region

    grid = np.indices((60, 50, 40)).astype(np.float64)
    head = ((grid - np.array([25.0, 25.0, 20.0])[:, None, None, None]) ** 2).sum(axis=0) <= 10.0**2
    blob = ((grid - np.array([55.0, 45.0, 35.0])[:, None, None, None]) ** 2).sum(axis=0) <= 3.0**2
    probabilities = np.stack([np.where(head | blob, 0.1, 0.9), np.where(head | blob, 0.9, 0.1)])
    np.testing.assert_array_equal(coarse_region(probabilities), head)
    box = foreground_box(Image(coarse_region(probabilities).astype(np.uint8), np.eye(4)), 2.0)
    assert box is not None and box.start == (13, 13, 8) and box.stop == (38, 38, 33)
    symphysis = ((grid - np.array([50.0, 10.0, 20.0])[:, None, None, None]) ** 2).sum(axis=0) <= 4.0**2
    three = np.stack([~(head | blob | symphysis), head | blob, symphysis]).astype(np.float64)
    np.testing.assert_array_equal(coarse_region(three), head | symphysis)


def _bitten_ball(shape: tuple[int, ...], radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A ball in the middle of a grid and the bite taken from its flank (voxels with y beyond 0.6 of the radius,
    within half the radius of the centre along x)."""
    centre = (np.array(shape, dtype=np.float64) - 1.0) / 2.0
    grid = np.indices(shape).astype(np.float64) - centre[:, None, None, None]
    ball = (grid**2).sum(axis=0) <= radius**2
    bite = ball & (grid[1] > 0.6 * radius) & (np.abs(grid[0]) < 0.5 * radius)
    return ball & ~bite, bite


def _bridged(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The voxels of ``region`` with a voxel of ``mask`` on both sides along x in the same row: on the segment
    between two of the mask's voxels, so inside any convex set holding the mask (the hull's oracle)."""
    before = np.maximum.accumulate(mask, axis=0)
    after = np.maximum.accumulate(mask[::-1], axis=0)[::-1]
    return region & before & after


def test_a_convex_context_gives_a_dent_in_the_coarse_head_the_head_probability_it_sets() -> None:
    """Voxels the hull adds get head probability 0.7 and the other classes keep their proportions (a symphysis
    class stays a symphysis); voxels inside the head or outside the hull are untouched."""
    from FetalHeadSegLib.inference.roi_cascade import CONVEX_CONTEXT_PROBABILITY, convex_head

    head, bite = _bitten_ball((40, 40, 40), 12.0)
    symphysis = np.zeros_like(head)
    symphysis[2:5, 2:5, 2:5] = True
    head_p = np.where(head, 0.9, np.where(bite, 0.2, 0.05))
    symphysis_p = np.where(symphysis, 0.8, 0.2 * (1.0 - head_p))
    probabilities = np.stack([1.0 - head_p - symphysis_p, symphysis_p, head_p])
    completed = convex_head(probabilities, 2, (1.0, 1.0, 1.0), detach_fraction=None)
    np.testing.assert_allclose(completed.sum(axis=0), 1.0, atol=1e-12)
    inner_bite = _bridged(head, bite)
    assert inner_bite.sum() > 200
    np.testing.assert_allclose(completed[2][inner_bite], CONVEX_CONTEXT_PROBABILITY)
    np.testing.assert_allclose(completed[1][inner_bite] / completed[0][inner_bite], 0.16 / 0.64)
    from scipy import ndimage

    changed = np.any(completed != probabilities, axis=0)
    reach = ndimage.binary_dilation(head | bite)  # each voxel counts with its faces' centres: half a voxel out
    assert not (changed & (head | symphysis)).any() and not (changed & ~reach).any()


def test_a_limb_against_the_coarse_head_does_not_stretch_its_hull() -> None:
    """A ball (radius 12 voxels) with a limb (a rod 3 voxels thick, 14 long) stuck to it: its hull alone would take
    in the wedge between rod and ball; with the bundle's detach step the hull is the ball's, so nothing outside the
    ball (and its half-voxel rim) becomes head, and the rod keeps level 1's probability."""
    from scipy import ndimage

    from FetalHeadSegLib.inference.roi_cascade import convex_head

    grid = np.indices((48, 48, 48)).astype(np.float64) - 18.0
    ball = (grid**2).sum(axis=0) <= 12.0**2
    rod = (np.abs(grid[1] - 8.0) <= 1.5) & (np.abs(grid[2]) <= 1.5) & (grid[0] > 0.0) & (grid[0] < 26.0)
    head = ball | rod
    probabilities = np.stack([np.where(head, 0.1, 0.9), np.where(head, 0.9, 0.1)])
    stretched = convex_head(probabilities, 1, (1.0, 1.0, 1.0), detach_fraction=None)
    assert ((stretched[1] > 0.5) & ~head).sum() > 300
    completed = convex_head(probabilities, 1, (1.0, 1.0, 1.0), detach_fraction=0.5)
    assert not ((completed[1] > 0.5) & ~ndimage.binary_dilation(ball) & ~rod).any()
    np.testing.assert_array_equal(completed[:, rod], probabilities[:, rod])


@pytest.mark.parametrize("convex_context", [True, False])
def test_the_finer_level_sees_the_coarse_heads_convex_hull_when_the_bundle_says_so(
    tmp_path: Path, convex_context: bool
) -> None:
    """Level 1 (stubbed) finds a ball with a bite in its flank; level 2 (stubbed) returns the context it was given
    as its head probability, so the result shows what level 2 saw: the bite at head probability 0.7 with
    ``convex_context``, at level 1's 0.2 without (both resampled from level 1's grid to level 2's and back)."""
    from types import SimpleNamespace

    from FetalHeadSegLib.inference.roi_cascade import predict_roi_cascade

    bundle = _roi_model(tmp_path, convex_context=convex_context).bundle
    image = Image(np.zeros((64, 64, 64), np.float32), make_ijk_to_ras((1.0, 1.0, 1.0)))

    def predict(level: int, inputs: np.ndarray, number: int, total: int) -> np.ndarray:
        if level == 0:
            head, bite = _bitten_ball(inputs.shape[1:], 10.0)
            head_p = np.where(head, 0.95, np.where(bite, 0.2, 0.02))
        else:
            head_p = inputs[1]
        return np.stack([1.0 - head_p, head_p]).astype(np.float32)

    run = SimpleNamespace(segmenter=SimpleNamespace(bundle=bundle), predict=predict)
    output = predict_roi_cascade(run, image, bundle, 8, tta=False)  # type: ignore[arg-type]
    from scipy import ndimage

    head, bite = _bitten_ball((64, 64, 64), 20.0)
    core = ndimage.binary_erosion(_bridged(head, bite))  # away from the resampled edges
    seen = float(np.median(output.class_probabilities[1][core]))
    assert core.sum() > 200
    assert (seen > 0.5) == convex_context  # head for level 2, or background as level 1 had it
    assert seen == pytest.approx(0.7 if convex_context else 0.2, abs=0.05)  # two resamplings blur the edges
