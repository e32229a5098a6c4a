"""Analytic test shapes with exact truth: ellipsoids and ellipses on arbitrary grids, intrapartum label maps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from FetalHeadSegLib.core.image import Image, make_ijk_to_ras


def rotation_matrix(axis: tuple[float, float, float], angle_rad: float) -> np.ndarray:
    """Rotation about ``axis`` by ``angle_rad`` (Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64)
    k /= np.linalg.norm(k)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * cross + (1 - math.cos(angle_rad)) * cross @ cross


@dataclass(frozen=True)
class Ellipsoid:
    """A solid ellipsoid rasterised on a grid, and its analytic truth."""

    image: Image
    semi_axes_mm: tuple[float, float, float]
    axes_ras: np.ndarray  # columns: directions of the semi-axes
    center_ras: np.ndarray

    @property
    def volume_ml(self) -> float:
        a, b, c = self.semi_axes_mm
        return 4.0 / 3.0 * math.pi * a * b * c / 1000.0


def make_ellipsoid(
    semi_axes_mm: tuple[float, float, float],
    rotation: np.ndarray | None = None,
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    direction_ras: np.ndarray | None = None,
    center_ras: tuple[float, float, float] = (10.0, -20.0, 5.0),
    margin_mm: float = 6.0,
) -> Ellipsoid:
    """Rasterise a solid ellipsoid (voxel centres inside) on a grid of the given spacing and direction."""
    axes = np.eye(3) if rotation is None else rotation
    direction = np.eye(3) if direction_ras is None else direction_ras
    spacing = np.asarray(spacing_mm)
    shape = np.ceil(2 * (max(semi_axes_mm) + margin_mm) / spacing).astype(int)
    center = np.asarray(center_ras, dtype=np.float64)
    origin = center - direction @ (spacing * (shape - 1) / 2.0)
    affine = make_ijk_to_ras(spacing, origin, direction)
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(np.float64)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    local = (ras - center) @ axes / np.asarray(semi_axes_mm)
    inside = (local**2).sum(axis=1) <= 1.0
    return Ellipsoid(Image(inside.reshape(tuple(shape)).astype(np.uint8), affine), semi_axes_mm, axes, center)


def make_ellipse_frame(
    semi_axes_mm: tuple[float, float],
    angle_rad: float,
    spacing_mm: tuple[float, float] = (0.2, 0.2),
    shape: tuple[int, int] = (800, 540),
    center_px: tuple[float, float] | None = None,
) -> Image:
    """A filled ellipse on a 2D frame (X, Y, 1); pixel centres inside the ellipse are 1."""
    sx, sy = spacing_mm
    cx, cy = center_px if center_px is not None else ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)
    x, y = np.meshgrid(np.arange(shape[0]) * sx, np.arange(shape[1]) * sy, indexing="ij")
    dx, dy = x - cx * sx, y - cy * sy
    u = dx * math.cos(angle_rad) + dy * math.sin(angle_rad)
    v = -dx * math.sin(angle_rad) + dy * math.cos(angle_rad)
    inside = (u / semi_axes_mm[0]) ** 2 + (v / semi_axes_mm[1]) ** 2 <= 1.0
    return Image(inside[:, :, np.newaxis].astype(np.uint8), make_ijk_to_ras((sx, sy, 1.0)))


def circle(center: tuple[float, float], radius: float, count: int = 200_000) -> np.ndarray:
    """(count, 2) points on a circle: an analytic head border for the angle of progression."""
    t = np.linspace(0.0, 2.0 * math.pi, count, endpoint=False)
    return np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], axis=1)


def intrapartum_labels(
    spacing: float = 0.25, head_center=(-5.0, 35.0), radius: float = 25.0, symphysis_tilt_deg: float = 0.0
) -> Image:
    """A PSFHS-like frame in mm: a 30 mm symphysis bar from S = (-30, 0) to the apex V = (0, 0) at its right end
    (probe at the top: rows grow downwards), turned by ``symphysis_tilt_deg`` about V (positive: S moves down),
    and a circular head below it. With the defaults the AoP is 126.870 deg, tangent point T = (15, 20).

    Pixel (i, j) has its centre at (i * s - 40, j * s - 20) mm: x along columns, y along rows.
    """
    columns, rows = np.arange(round(80 / spacing)), np.arange(round(85 / spacing))
    x, y = np.meshgrid(columns * spacing - 40, rows * spacing - 20, indexing="ij")
    tilt = math.radians(symphysis_tilt_deg)
    along, across = -x * math.cos(tilt) + y * math.sin(tilt), x * math.sin(tilt) + y * math.cos(tilt)
    labels = np.zeros(x.shape, dtype=np.uint8)
    labels[(np.abs(across) <= 1.5) & (along >= 0) & (along <= 30)] = 1
    labels[np.hypot(x - head_center[0], y - head_center[1]) <= radius] = 2
    return Image(labels[:, :, None], make_ijk_to_ras((spacing, spacing, 1.0), (-40.0, -20.0, 0.0)))
