"""Ellipses: perimeter formulas, fitting to edge points, and sub-pixel edge points of a 2D mask.

Conventions (``biometry.md`` §1.4-1.6): semi-axes ``a >= b``; HC is Ramanujan's first perimeter approximation of
the ellipse fitted to the outer border; all fitting happens in millimetres, so anisotropic pixels are handled
before the fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
import numpy.typing as npt

from FetalHeadSegLib.core.errors import DependencyError, InputImageError


def ramanujan_perimeter(a: float, b: float) -> float:
    """Ramanujan's first approximation of an ellipse perimeter (the project's HC formula).

    ``P1 = pi * (3 (a + b) - sqrt((3a + b)(a + 3b)))`` for semi-axes ``a`` and ``b`` (any order, same unit).

    Example:
        >>> round(ramanujan_perimeter(90, 70), 5)
        504.62024
    """
    return math.pi * (3.0 * (a + b) - math.sqrt((3.0 * a + b) * (a + 3.0 * b)))


def ramanujan_perimeter_2(a: float, b: float) -> float:
    """Ramanujan's second approximation, ``pi (a + b) (1 + 3h / (10 + sqrt(4 - 3h)))``, h = ((a-b)/(a+b))^2."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1.0 + 3.0 * h / (10.0 + math.sqrt(4.0 - 3.0 * h)))


def exact_perimeter(a: float, b: float) -> float:
    """The exact perimeter ``4 a E(1 - b^2/a^2)`` (complete elliptic integral of the second kind)."""
    from scipy.special import ellipe

    major, minor = max(a, b), min(a, b)
    return 4.0 * major * float(ellipe(1.0 - (minor / major) ** 2))


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in a 2D Cartesian frame (millimetres unless stated otherwise).

    Attributes:
        center: (x, y) of the centre.
        semi_major: a, half the major axis (>= ``semi_minor``).
        semi_minor: b, half the minor axis.
        angle_rad: angle of the major axis from the +x axis, in [0, pi).
        residual_rms: root-mean-square geometric distance of the fitted points to the ellipse (0 if not fitted).
    """

    center: tuple[float, float]
    semi_major: float
    semi_minor: float
    angle_rad: float
    residual_rms: float = 0.0

    @property
    def perimeter(self) -> float:
        """Ramanujan I perimeter (HC when the unit is mm)."""
        return ramanujan_perimeter(self.semi_major, self.semi_minor)

    @property
    def area(self) -> float:
        """pi a b."""
        return math.pi * self.semi_major * self.semi_minor

    @property
    def major_direction(self) -> np.ndarray:
        """Unit vector along the major axis."""
        return np.array([math.cos(self.angle_rad), math.sin(self.angle_rad)])

    @property
    def minor_direction(self) -> np.ndarray:
        """Unit vector along the minor axis (major rotated by +90 degrees)."""
        return np.array([-math.sin(self.angle_rad), math.cos(self.angle_rad)])

    def major_axis_endpoints(self) -> np.ndarray:
        """The two ends of the major axis, shape (2, 2): OFD calipers on an outer-skull ellipse."""
        c = np.asarray(self.center)
        d = self.semi_major * self.major_direction
        return np.stack([c - d, c + d])

    def minor_axis_endpoints(self) -> np.ndarray:
        """The two ends of the minor axis, shape (2, 2): BPD (outer-outer) calipers."""
        c = np.asarray(self.center)
        d = self.semi_minor * self.minor_direction
        return np.stack([c - d, c + d])

    def points(self, count: int = 64) -> np.ndarray:
        """``count`` points evenly spaced in parameter around the ellipse, shape (count, 2)."""
        t = np.linspace(0.0, 2.0 * math.pi, count, endpoint=False)
        local = np.stack([self.semi_major * np.cos(t), self.semi_minor * np.sin(t)], axis=1)
        rotation = np.stack([self.major_direction, self.minor_direction], axis=1)
        return local @ rotation.T + np.asarray(self.center)

    def contains(self, points: npt.ArrayLike) -> np.ndarray:
        """Boolean array: which (N, 2) points lie inside or on the ellipse."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2) - np.asarray(self.center)
        u = p @ self.major_direction / self.semi_major
        v = p @ self.minor_direction / self.semi_minor
        return np.asarray(u * u + v * v <= 1.0)

    def scaled(self, factor: float) -> Ellipse:
        """The same ellipse with every length multiplied by ``factor`` (e.g. pixels to mm)."""
        return Ellipse(
            (self.center[0] * factor, self.center[1] * factor),
            self.semi_major * factor,
            self.semi_minor * factor,
            self.angle_rad,
            self.residual_rms * factor,
        )

    def radial_distances(self, points: npt.ArrayLike) -> np.ndarray:
        """Distance of each (N, 2) point to the ellipse along the ray from the centre.

        For points near the ellipse this equals the geometric (closest-point) distance to first order, at a
        fraction of its cost; it is used for the fit residual.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2) - np.asarray(self.center)
        u = p @ self.major_direction / self.semi_major
        v = p @ self.minor_direction / self.semi_minor
        normalised_radius = np.sqrt(u * u + v * v)
        distance_to_centre = np.linalg.norm(p, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.abs(1.0 - 1.0 / normalised_radius) * distance_to_centre
        return np.asarray(np.where(normalised_radius > 0, distance, min(self.semi_minor, self.semi_major)))

    def line_exit_distance(self, origin: npt.ArrayLike, direction: npt.ArrayLike) -> float | None:
        """Distance from ``origin`` along unit ``direction`` to the far crossing of the ellipse, or None."""
        o = np.asarray(origin, dtype=np.float64) - np.asarray(self.center)
        d = np.asarray(direction, dtype=np.float64)
        scale = np.array([self.semi_major, self.semi_minor])
        frame = np.stack([self.major_direction, self.minor_direction])
        o_local, d_local = frame @ o / scale, frame @ d / scale
        qa, qb, qc = d_local @ d_local, 2.0 * o_local @ d_local, o_local @ o_local - 1.0
        discriminant = qb * qb - 4.0 * qa * qc
        if discriminant < 0:
            return None
        return float((-qb + math.sqrt(discriminant)) / (2.0 * qa))


def fit_ellipse(points: npt.ArrayLike) -> Ellipse:
    """Fit an ellipse to 2D points (direct least squares, Halir-Flusser, via scikit-image).

    Args:
        points: (N, 2) coordinates, N >= 5, in one isotropic unit (mm, or pixels).

    Returns:
        The ellipse, with a >= b, the major-axis angle in [0, pi) and the RMS residual.

    Raises:
        InputImageError: fewer than 5 points, or the points do not determine an ellipse.
    """
    from skimage.measure import EllipseModel

    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 5:
        raise InputImageError(f"an ellipse needs at least 5 boundary points, got {len(xy)}: the mask is too small")
    # Centre and scale the points first: the conic fit is far better conditioned near unit scale.
    offset = xy.mean(axis=0)
    scale = float(np.sqrt(((xy - offset) ** 2).sum(axis=1).mean())) or 1.0
    try:
        model = EllipseModel.from_estimate((xy - offset) / scale)
    except TypeError as error:  # complex eigenvectors reach an in-place modulo (scikit-image issue #8235)
        raise DependencyError(
            f"scikit-image {version('scikit-image')} cannot fit ellipses with numpy {np.__version__}, whose "
            "linalg.eig returns complex values (scikit-image issue #8235): install numpy<2.5 or a scikit-image "
            "release with the fix"
        ) from error
    if not model:
        raise InputImageError("no ellipse fits the mask's border (degenerate or line-like shape)")
    (cx, cy), (ax0, ax1), theta = model.center, model.axis_lengths, float(model.theta)
    if ax1 > ax0:
        ax0, ax1, theta = ax1, ax0, theta + math.pi / 2.0
    ellipse = Ellipse(
        center=(float(cx) * scale + offset[0], float(cy) * scale + offset[1]),
        semi_major=float(ax0) * scale,
        semi_minor=float(ax1) * scale,
        angle_rad=theta % math.pi,
    )
    residual = float(np.sqrt(np.mean(ellipse.radial_distances(xy) ** 2)))
    return Ellipse(ellipse.center, ellipse.semi_major, ellipse.semi_minor, ellipse.angle_rad, residual)


def mask_edge_points(mask: npt.ArrayLike, spacing_mm: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Sub-pixel points on the outer border of a 2D mask, in mm (``biometry.md`` §5.4).

    The border is the 0.5 iso-contour of the mask (a binary mask gives the midpoints between each inside pixel
    and its outside neighbours; a probability or interpolated mask gives its 0.5 level). Only the longest
    closed contour is returned: the outer border of the largest region.

    Args:
        mask: 2D array indexed (x, y); values in [0, 1] (bool or probability).
        spacing_mm: pixel size along x and y.

    Returns:
        (N, 2) points (x, y) in mm, where pixel (i, j) has its centre at (i * sx, j * sy).

    Raises:
        InputImageError: the mask has no border (empty).
    """
    from skimage.measure import find_contours

    values = np.asarray(mask, dtype=np.float64)
    padded = np.pad(values, 1)  # closes contours of regions that touch the edge
    contours = find_contours(padded, 0.5)
    if not contours:
        raise InputImageError("the mask is empty: no border to measure")
    longest = max(contours, key=len)[:-1] - 1.0  # drop the repeated closing point, undo the padding
    return longest * np.asarray(spacing_mm, dtype=np.float64)[np.newaxis, :]
