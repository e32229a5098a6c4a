"""Analytic solids for the phantom: ellipsoids, capsules and spheres, their insides, normals and sections."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from FetalHeadSegLib.measure.ellipse import Ellipse


@dataclass(frozen=True)
class Ellipsoid:
    """A solid ellipsoid: centre (RAS mm), axes (3x3, columns are unit directions) and semi-axes (mm)."""

    center: np.ndarray
    axes: np.ndarray
    semi_axes: np.ndarray

    @property
    def bounding_radius(self) -> float:
        return float(np.max(self.semi_axes))

    @property
    def volume_mm3(self) -> float:
        return 4.0 / 3.0 * math.pi * float(np.prod(self.semi_axes))

    def local(self, points: np.ndarray) -> np.ndarray:
        """Coordinates of (N, 3) points in the ellipsoid's frame, divided by the semi-axes."""
        return np.asarray(((points - self.center) @ self.axes) / self.semi_axes)

    def contains(self, points: np.ndarray) -> np.ndarray:
        local = self.local(points)
        return np.asarray(np.einsum("ij,ij->i", local, local) <= 1.0)

    def scaled(self, semi_axes: np.ndarray) -> Ellipsoid:
        """Same centre and axes, other semi-axes."""
        return Ellipsoid(self.center, self.axes, np.asarray(semi_axes, dtype=np.float64))

    def outward_normals(self, points: np.ndarray) -> np.ndarray:
        """Unit normals of the level surface through each point (gradient of the quadratic form)."""
        gradient_local = ((points - self.center) @ self.axes) / self.semi_axes**2
        gradient = gradient_local @ self.axes.T
        norms = np.linalg.norm(gradient, axis=1, keepdims=True)
        return np.asarray(gradient / np.where(norms > 0, norms, 1.0))

    def support_distance(self, direction: np.ndarray) -> float:
        """Half-extent of the ellipsoid along a unit direction."""
        local = self.axes.T @ direction * self.semi_axes
        return float(np.linalg.norm(local))

    def section(self, origin: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray) -> Ellipse | None:
        """The ellipse cut from the ellipsoid by the plane ``origin + s axis_u + t axis_v`` (orthonormal axes).

        Returns the ellipse in plane coordinates (s, t) in mm, or None when the plane misses the ellipsoid.
        """
        quadric = self.axes @ np.diag(1.0 / self.semi_axes**2) @ self.axes.T
        basis = np.stack([axis_u, axis_v], axis=1)
        offset = origin - self.center
        q = basis.T @ quadric @ basis
        g = basis.T @ quadric @ offset
        k = float(offset @ quadric @ offset) - 1.0
        center = -np.linalg.solve(q, g)
        rho = float(g @ np.linalg.solve(q, g)) - k
        if rho <= 0:
            return None
        eigenvalues, eigenvectors = np.linalg.eigh(q)
        semi_major, semi_minor = math.sqrt(rho / eigenvalues[0]), math.sqrt(rho / eigenvalues[1])
        major = eigenvectors[:, 0]
        angle = math.atan2(float(major[1]), float(major[0])) % math.pi
        return Ellipse((float(center[0]), float(center[1])), semi_major, semi_minor, angle)


@dataclass(frozen=True)
class Capsule:
    """All points within ``radius`` of the segment from ``start`` to ``end`` (RAS mm)."""

    start: np.ndarray
    end: np.ndarray
    radius: float

    @property
    def center(self) -> np.ndarray:
        return np.asarray(0.5 * (self.start + self.end))

    @property
    def bounding_radius(self) -> float:
        return 0.5 * float(np.linalg.norm(self.end - self.start)) + self.radius

    def distance(self, points: np.ndarray) -> np.ndarray:
        segment = self.end - self.start
        t = np.clip(((points - self.start) @ segment) / float(segment @ segment), 0.0, 1.0)
        return np.asarray(np.linalg.norm(points - (self.start + t[:, None] * segment), axis=1))

    def contains(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(self.distance(points) <= self.radius)


@dataclass(frozen=True)
class Sphere:
    center: np.ndarray
    radius: float

    @property
    def bounding_radius(self) -> float:
        return self.radius

    def contains(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(np.linalg.norm(points - self.center, axis=1) <= self.radius)
