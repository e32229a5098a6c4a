"""Perimeter formulas (biometry.md §1.4, vectors 10-11) and ellipse fitting on sub-pixel edges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from FetalHeadSegLib.core.errors import DependencyError, InputImageError
from FetalHeadSegLib.measure.ellipse import (
    Ellipse,
    exact_perimeter,
    fit_ellipse,
    mask_edge_points,
    ramanujan_perimeter,
    ramanujan_perimeter_2,
)

from shapes import make_ellipse_frame


def test_ramanujan_perimeters_vector_10() -> None:
    assert ramanujan_perimeter(90, 70) == pytest.approx(504.620241, abs=1e-5)
    assert ramanujan_perimeter_2(90, 70) == pytest.approx(504.620245, abs=1e-5)
    assert exact_perimeter(90, 70) == pytest.approx(504.620245, abs=1e-5)
    # At a:b = 2:1, Ramanujan I is only 0.0003 % low.
    assert ramanujan_perimeter(2, 1) / exact_perimeter(2, 1) == pytest.approx(1.0, abs=1e-5)


def test_hc18_style_scaling_vector_11() -> None:
    in_pixels = Ellipse((400.0, 270.0), 350.0, 280.0, 0.3)
    assert in_pixels.perimeter * 0.1 == pytest.approx(198.532, abs=1e-3)
    assert in_pixels.scaled(0.1).perimeter == pytest.approx(198.532, abs=1e-3)


@pytest.mark.parametrize("angle", [0.0, 0.7, 1.9, 3.0])
def test_fit_recovers_an_exact_ellipse(angle: float) -> None:
    truth = Ellipse((12.0, -4.0), 45.0, 31.0, angle)
    fitted = fit_ellipse(truth.points(200))
    assert fitted.center == pytest.approx(truth.center, abs=1e-6)
    assert (fitted.semi_major, fitted.semi_minor) == pytest.approx((45.0, 31.0), abs=1e-6)
    assert fitted.angle_rad == pytest.approx(angle % math.pi, abs=1e-6)
    assert fitted.residual_rms < 1e-4


def test_major_and_minor_axis_endpoints_lie_on_the_ellipse() -> None:
    ellipse = Ellipse((1.0, 2.0), 5.0, 3.0, 0.4)
    ends = np.vstack([ellipse.major_axis_endpoints(), ellipse.minor_axis_endpoints()])
    assert np.linalg.norm(ends[0] - ends[1]) == pytest.approx(10.0)
    assert np.linalg.norm(ends[2] - ends[3]) == pytest.approx(6.0)
    assert fit_ellipse(ellipse.points(50)).contains(ends * 0.999 + 0.001 * np.asarray(ellipse.center)).all()


@pytest.mark.parametrize(("spacing", "angle"), [((0.2, 0.2), 0.35), ((0.15, 0.25), 1.2)])
def test_sub_pixel_edges_give_the_perimeter_of_a_rasterised_ellipse(spacing: tuple[float, float], angle: float) -> None:
    frame = make_ellipse_frame((40.0, 31.0), angle, spacing_mm=spacing)
    fitted = fit_ellipse(mask_edge_points(frame.array[:, :, 0], spacing))
    assert fitted.perimeter == pytest.approx(ramanujan_perimeter(40.0, 31.0), rel=2e-3)
    assert fitted.angle_rad == pytest.approx(angle, abs=5e-3)


def test_an_empty_or_tiny_mask_cannot_be_fitted() -> None:
    with pytest.raises(InputImageError, match="empty"):
        mask_edge_points(np.zeros((10, 10)))
    with pytest.raises(InputImageError, match="at least 5"):
        fit_ellipse([[0, 0], [1, 1], [2, 0]])


def test_numpy_2_5s_complex_eigenvectors_give_the_ellipse_or_say_which_versions_clash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numpy 2.5 made linalg.eig return complex arrays even for real eigenvalues (its release notes); scikit-image
    0.26.0's EllipseModel then raises a TypeError (scikit-image issue #8235). A release with the fix fits the ellipse;
    one without it must name the clash, never leak the TypeError."""
    real_eig = np.linalg.eig

    def eig_as_numpy_2_5(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, vectors = real_eig(matrix)
        return values.astype(np.complex128), vectors.astype(np.complex128)

    monkeypatch.setattr(np.linalg, "eig", eig_as_numpy_2_5)
    truth = Ellipse((12.0, -4.0), 45.0, 31.0, 0.7)
    try:
        fitted = fit_ellipse(truth.points(200))
    except DependencyError as error:
        assert "numpy<2.5" in str(error) and "scikit-image" in str(error)
    else:
        assert (fitted.semi_major, fitted.semi_minor) == pytest.approx((45.0, 31.0), abs=1e-6)


def test_line_exit_distance_crosses_the_far_side() -> None:
    circle = Ellipse((0.0, 0.0), 10.0, 10.0, 0.0)
    assert circle.line_exit_distance((-10.0, 0.0), (1.0, 0.0)) == pytest.approx(20.0)
    assert circle.line_exit_distance((-20.0, 50.0), (1.0, 0.0)) is None


def test_radial_residual_matches_the_geometric_distance_near_the_ellipse() -> None:
    from skimage.measure import EllipseModel

    ellipse = Ellipse((3.0, 1.0), 40.0, 30.0, 0.6)
    rng = np.random.default_rng(3)
    points = ellipse.points(300) + rng.normal(scale=0.4, size=(300, 2))
    model = EllipseModel(center=ellipse.center, axis_lengths=(40.0, 30.0), theta=0.6)
    geometric = np.abs(model.residuals(points))
    radial = ellipse.radial_distances(points)
    assert np.sqrt(np.mean(radial**2)) == pytest.approx(np.sqrt(np.mean(geometric**2)), rel=0.03)
