"""Angle of progression: biometry.md §4 vectors 15-16, masks of known geometry, and real PSFHS label maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from FetalHeadSegLib.core.errors import InputImageError
from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.measure.aop import angle_of_progression, aop_from_points
from FetalHeadSegLib.measure.ellipse import mask_edge_points

from shapes import circle, intrapartum_labels


def test_vector_15_picks_the_leading_tangent() -> None:
    angle, tangent = aop_from_points((0.0, 30.0), (0.0, 0.0), circle((35.0, 5.0), 25.0))
    assert angle == pytest.approx(126.870, abs=1e-3)
    assert tangent == pytest.approx((20.0, -15.0), abs=0.01)


def test_vector_16() -> None:
    angle, _ = aop_from_points((0.0, 30.0), (0.0, 0.0), circle((40.0, -20.0), 25.0))
    assert angle == pytest.approx(150.553, abs=1e-3)


def test_flipping_the_rows_leaves_the_angle_unchanged() -> None:
    flipped = circle((35.0, 5.0), 25.0) * np.array([1.0, -1.0])
    angle, _ = aop_from_points((0.0, -30.0), (0.0, 0.0), flipped)
    assert angle == pytest.approx(126.870, abs=1e-3)


def test_mask_geometry_with_a_known_angle() -> None:
    labels = intrapartum_labels()
    result = angle_of_progression(labels)
    # Vector 15 turned by 90 degrees: the bar's PCA axis runs from about (-30, 0) to the apex (0, 0) at its right
    # end; tangent to a circle centred (-5, 35), radius 25, at (15, 20).
    assert result.aop_deg == pytest.approx(126.87, abs=0.3)
    assert result.v_ras[:2] == pytest.approx((0.0, 0.0), abs=0.3)
    assert result.s_ras[:2] == pytest.approx((-30.0, 0.0), abs=0.3)
    assert result.t_ras[:2] == pytest.approx((15.0, 20.0), abs=0.5)


@pytest.mark.parametrize("head_center", [(-5.0, 35.0), (-5.0, 60.0)])
def test_the_angles_sensitivity_to_the_head_border_follows_the_tangent_geometry(head_center: tuple) -> None:
    """Seen from the apex at distance D, the tangent to a circle of radius r lies asin(r / D) off the line to its
    centre, so a border grown by one pixel (0.25 mm) turns the angle by asin((r + 0.25) / D) - asin(r / D): about
    0.58 deg for the head 35 mm from the apex and 0.27 for the one 60 mm away."""
    result = angle_of_progression(intrapartum_labels(head_center=head_center))
    distance = math.hypot(*head_center)
    expected = math.degrees(math.asin(25.25 / distance) - math.asin(25.0 / distance))
    assert result.border_sensitivity_deg == pytest.approx(expected, abs=0.05)


def test_apex_side_chooses_the_apex() -> None:
    labels = intrapartum_labels()
    from_left = angle_of_progression(labels, apex_side="left")
    assert from_left.v_ras[:2] == pytest.approx((-30.0, 0.0), abs=0.3)
    assert from_left.aop_deg != pytest.approx(126.87, abs=1.0)


@pytest.mark.parametrize("tilt_deg", [-3.0, -1.0, 1.0, 3.0])
def test_a_near_level_symphysis_keeps_its_apex(tilt_deg: float) -> None:
    """Whichever end of a near-level symphysis lies a little higher, the apex stays at its right end and the angle
    moves with the axis (turning it about V by t changes the AoP by -t), never to the other end's angle."""
    result = angle_of_progression(intrapartum_labels(symphysis_tilt_deg=tilt_deg))
    assert result.v_ras[:2] == pytest.approx((0.0, 0.0), abs=0.3)
    assert result.aop_deg == pytest.approx(126.87 - tilt_deg, abs=0.5)  # the other end's angle is 70 deg away


def test_a_spur_on_the_head_border_does_not_move_the_tangent() -> None:
    """A thin spur sticking out of the head where the tangent touches it (a segmentation artefact) would pull the
    tangent of the raw border outwards; the head's fitted ellipse keeps the analytic angle."""
    labels = intrapartum_labels()
    array = labels.array.copy()
    (spacing, _, _), origin = labels.spacing_mm, labels.ijk_to_ras[:2, 3]
    x = np.arange(array.shape[0])[:, None] * spacing + origin[0]
    y = np.arange(array.shape[1])[None, :] * spacing + origin[1]
    outward, sideways = (x - 15.0) * 0.8 - (y - 20.0) * 0.6, (x - 15.0) * 0.6 + (y - 20.0) * 0.8
    array[(outward >= -1.0) & (outward <= 4.0) & (np.abs(sideways) <= 0.5), 0] = 2  # 4 mm out along the normal at T
    spurred = labels.with_array(array)
    raw_border = mask_edge_points(array[:, :, 0] == 2, (spacing, spacing)) + origin
    assert aop_from_points((-30.0, 0.0), (0.0, 0.0), raw_border)[0] > 135.0  # the spur's tip (18.2, 17.6)
    assert angle_of_progression(spurred).aop_deg == pytest.approx(126.87, abs=1.5)


def test_missing_structures_and_3d_input_are_refused() -> None:
    labels = intrapartum_labels()
    no_head = labels.with_array(np.where(labels.array == 2, 0, labels.array).astype(np.uint8))
    with pytest.raises(InputImageError, match="fetal head"):
        angle_of_progression(no_head)
    volume = Image(np.ones((4, 4, 4), dtype=np.uint8), np.eye(4))
    with pytest.raises(InputImageError, match="2D"):
        angle_of_progression(volume)


def test_real_psfhs_masks_give_intrapartum_angles(psfhs_dir) -> None:
    from FetalHeadSegLib.core.io import read_image

    files = sorted((psfhs_dir / "label_mha").glob("*.mha"))[:40]
    angles = [angle_of_progression(read_image(path)).aop_deg for path in files]
    # biometry.md §4: this recipe gives about 104-143 degrees on the local PSFHS subset.
    assert min(angles) > 90.0 and max(angles) < 160.0
    assert 100.0 < float(np.median(angles)) < 140.0
