"""The biometry engine against analytic shapes: ellipses and ellipsoids of known axes, any pose and grid."""

from __future__ import annotations

import math

import numpy as np
import pytest

from FetalHeadSegLib.core.errors import InputImageError
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.measure.biometry import BIOMETRY_JSON_KEYS, measure_biometry
from FetalHeadSegLib.measure.ellipse import ramanujan_perimeter
from FetalHeadSegLib.measure.section import principal_axes

from shapes import make_ellipse_frame, make_ellipsoid, rotation_matrix

OBLIQUE = rotation_matrix((1.0, 2.0, 0.5), 0.6)


def assert_head_biometry(result, a: float, b: float, rel: float = 0.01) -> None:
    assert result.hc_mm == pytest.approx(ramanujan_perimeter(a, b), rel=rel)
    assert result.ofd_mm == pytest.approx(2 * a, rel=rel)
    assert result.bpd_mm == pytest.approx(2 * b, rel=rel)
    assert result.cephalic_index == pytest.approx(100 * b / a, rel=2 * rel)


@pytest.mark.parametrize(
    ("rotation", "spacing", "direction"),
    [
        (None, (1.0, 1.0, 1.0), None),
        (rotation_matrix((0.3, -1.0, 0.8), 1.1), (0.8, 1.0, 1.3), None),  # rotated head, anisotropic voxels
        (rotation_matrix((1.0, 0.2, -0.4), 2.2), (0.9, 0.7, 1.2), OBLIQUE),  # and an oblique grid
    ],
)
def test_3d_ellipsoid_in_any_pose(rotation, spacing, direction) -> None:
    shape = make_ellipsoid((44.2, 35.3, 30.0), rotation=rotation, spacing_mm=spacing, direction_ras=direction)
    result = measure_biometry(shape.image)
    assert_head_biometry(result, 44.2, 35.3)
    assert result.head_volume_ml == pytest.approx(shape.volume_ml, rel=0.02)
    # The measurement plane holds the two longest axes: its normal is the shortest one.
    assert abs(result.plane.normal_ras @ shape.axes_ras[:, 2]) == pytest.approx(1.0, abs=0.01)
    assert abs(result.plane.ofd_axis_ras @ shape.axes_ras[:, 0]) == pytest.approx(1.0, abs=0.01)
    assert np.linalg.norm(result.plane.origin_ras - shape.center_ras) < 0.5
    assert result.plane.method == "principal_axes"
    assert "plane_from_principal_axes" in {flag.code for flag in result.flags}
    # Landmarks sit on the ellipsoid's surface (distance between the calipers = the diameters).
    bpd_ends, ofd_ends = result.landmarks.bpd_ras, result.landmarks.ofd_ras
    assert np.linalg.norm(bpd_ends[1] - bpd_ends[0]) == pytest.approx(result.bpd_mm)
    assert np.linalg.norm(ofd_ends[1] - ofd_ends[0]) == pytest.approx(result.ofd_mm)
    hc_curve = result.landmarks.hc_ellipse_ras
    assert hc_curve.shape == (64, 3)
    assert np.abs((hc_curve - result.plane.origin_ras) @ result.plane.normal_ras).max() < 1e-6


def test_reference_ellipsoid_vector_13() -> None:
    """biometry.md §7 vector 13: 44.2 / 35.3 / 33.0 mm at 0.5 mm, rotated 0.4 rad."""
    shape = make_ellipsoid(
        (44.2, 35.3, 33.0), rotation=rotation_matrix((0, 0, 1), 0.4), spacing_mm=(0.5,) * 3, margin_mm=2.0
    )
    points = shape.image.ijk_to_ras_points(np.argwhere(shape.image.array > 0))
    axes = principal_axes(points)
    assert axes.semi_axes_mm == pytest.approx([44.2, 35.3, 33.0], abs=0.01)
    result = measure_biometry(shape.image)
    assert result.head_volume_ml == pytest.approx(215.67, rel=1e-4)
    assert result.hc_mm == pytest.approx(250.54, rel=1e-3)
    assert result.ofd_mm == pytest.approx(88.4, abs=0.1)
    assert result.bpd_mm == pytest.approx(70.6, abs=0.1)
    assert result.cephalic_index == pytest.approx(79.9, abs=0.1)


def test_given_left_right_axis_picks_the_transverse_plane() -> None:
    """With the left-right axis known, the plane holds it even when it is not the second-longest axis."""
    rotation = rotation_matrix((0.2, 0.4, 1.0), 0.8)
    shape = make_ellipsoid((44.0, 33.0, 36.0), rotation=rotation, spacing_mm=(0.9, 0.9, 0.9))
    left_right = shape.axes_ras[:, 1]  # the 33 mm axis
    result = measure_biometry(shape.image, left_right_axis_ras=left_right)
    assert_head_biometry(result, 44.0, 33.0)
    assert result.plane.method == "anatomical_left_right"
    assert "plane_from_principal_axes" not in {flag.code for flag in result.flags}
    without = measure_biometry(shape.image)
    assert without.bpd_mm == pytest.approx(72.0, rel=0.01)  # the two longest axes: 44 and 36 mm


def test_plane_at_the_level_of_maximal_width_for_an_egg_shaped_head() -> None:
    """Two half-ellipsoids joined: the widest transverse section is not at the centroid."""
    spacing = 0.8
    n = 140
    grid = (np.arange(n) - n / 2) * spacing
    x, y, z = np.meshgrid(grid, grid, grid, indexing="ij")
    c_top, c_bottom = 26.0, 40.0  # cranio-caudal semi-axes above and below the widest level z = 0
    c = np.where(z >= 0, c_top, c_bottom)
    inside = (x / 45.0) ** 2 + (y / 36.0) ** 2 + (z / c) ** 2 <= 1.0
    image = Image(inside.astype(np.uint8), make_ijk_to_ras((spacing,) * 3, (-n / 2 * spacing,) * 3))
    result = measure_biometry(image, left_right_axis_ras=(0.0, 1.0, 0.0))
    assert abs(result.plane.origin_ras[2]) < 2.0  # the widest level, not the centroid (about 5 mm lower)
    assert_head_biometry(result, 45.0, 36.0)


@pytest.mark.parametrize(("spacing", "angle"), [((0.2, 0.2), 0.0), ((0.12, 0.18), 0.9), ((0.3, 0.3), 2.5)])
def test_2d_frame_hc18_convention(spacing: tuple[float, float], angle: float) -> None:
    frame = make_ellipse_frame((45.0, 36.0), angle, spacing_mm=spacing)
    result = measure_biometry(frame)
    assert_head_biometry(result, 45.0, 36.0, rel=0.003)
    assert result.dimension == 2 and result.head_volume_ml is None
    assert result.plane.method == "image_plane"
    assert result.flags == []


def test_bpd_outer_inner_with_an_inner_mask() -> None:
    """A skull of 3 mm: BPD outer-inner = outer semi-minor + inner semi-minor."""
    outer = make_ellipse_frame((45.0, 36.0), 0.4, spacing_mm=(0.15, 0.15))
    inner = make_ellipse_frame((42.0, 33.0), 0.4, spacing_mm=(0.15, 0.15))
    result = measure_biometry(outer, inner_mask=inner.array)
    assert result.bpd_oi_mm == pytest.approx(36.0 + 33.0, abs=0.1)
    assert result.gestational_age["hadlock1984_bpd"].reason is None
    ends = result.landmarks.bpd_oi_ras
    assert ends is not None and np.linalg.norm(ends[1] - ends[0]) == pytest.approx(result.bpd_oi_mm)


def test_3d_bpd_outer_inner_with_an_inner_mask() -> None:
    outer = make_ellipsoid((44.0, 35.0, 30.0), spacing_mm=(0.8, 0.8, 0.8))
    inner = make_ellipsoid((41.0, 32.0, 27.0), spacing_mm=(0.8, 0.8, 0.8), margin_mm=9.0)
    result = measure_biometry(outer.image, inner_mask=inner.image.array)
    assert result.bpd_oi_mm == pytest.approx(35.0 + 32.0, rel=0.01)


def test_ga_and_size_for_age_are_attached() -> None:
    frame = make_ellipse_frame((44.0, 35.5), 0.2, spacing_mm=(0.3, 0.3))
    result = measure_biometry(frame, ga_weeks=27.0)
    hc = result.hc_mm
    assert result.gestational_age["hadlock1984_hc"].weeks == pytest.approx(
        8.96 + 0.540 * hc / 10 + 0.0003 * (hc / 10) ** 3
    )
    assert result.size_for_age is not None
    assert result.size_for_age["hc"].z_score == pytest.approx((hc - 250.648) / 8.7841, abs=1e-3)
    data = result.to_dict()
    assert set(BIOMETRY_JSON_KEYS) <= set(data)


def test_flags_fragmented_border_and_implausible() -> None:
    frame = make_ellipse_frame((45.0, 36.0), 0.0, spacing_mm=(0.2, 0.2))
    array = frame.array.copy()
    array[5:60, 5:60, 0] = 1  # a second blob
    result = measure_biometry(frame.with_array(array))
    assert {flag.code for flag in result.flags} == {"fragmented"}
    assert result.hc_mm == pytest.approx(ramanujan_perimeter(45.0, 36.0), rel=0.003)  # largest part measured
    cut = make_ellipse_frame((45.0, 36.0), 0.0, spacing_mm=(0.2, 0.2), center_px=(300.0, 120.0))
    assert "touches_border" in {flag.code for flag in measure_biometry(cut).flags}
    tiny = measure_biometry(make_ellipse_frame((5.0, 4.0), 0.0, spacing_mm=(0.2, 0.2), shape=(200, 200)))
    assert "implausible_size" in {flag.code for flag in tiny.flags}


def test_a_noisy_border_raises_the_residual_flag() -> None:
    rng = np.random.default_rng(0)
    frame = make_ellipse_frame((45.0, 36.0), 0.0, spacing_mm=(0.5, 0.5), shape=(220, 200))
    x, y = np.meshgrid(np.arange(220), np.arange(200), indexing="ij")
    angle = np.arctan2(y - 99.5, x - 109.5)
    bumps = 1.0 + 0.12 * np.sin(7 * angle + rng.uniform(0, 2 * math.pi))
    r = np.hypot((x - 109.5) * 0.5 / 45.0, (y - 99.5) * 0.5 / 36.0)
    result = measure_biometry(frame.with_array((r <= bumps)[:, :, None].astype(np.uint8)))
    assert "fit_residual_high" in {flag.code for flag in result.flags}


def test_a_hollow_skull_shell_is_filled_before_measuring() -> None:
    outer = make_ellipsoid((40.0, 32.0, 28.0), spacing_mm=(1.0, 1.0, 1.0))
    inner = make_ellipsoid((37.0, 29.0, 25.0), spacing_mm=(1.0, 1.0, 1.0), margin_mm=9.0)
    shell = outer.image.array & (1 - inner.image.array)
    result = measure_biometry(outer.image.with_array(shell))
    assert result.head_volume_ml == pytest.approx(outer.volume_ml, rel=0.02)
    assert_head_biometry(result, 40.0, 32.0)


@pytest.mark.parametrize("bad", ["empty", "nan"])
def test_unusable_masks_are_refused(bad: str) -> None:
    array = np.zeros((20, 20, 20), dtype=np.float32)
    if bad == "nan":
        array[5:10, 5:10, 5:10] = np.nan
    with pytest.raises(InputImageError, match="empty" if bad == "empty" else "NaN"):
        measure_biometry(Image(array, np.eye(4)))
