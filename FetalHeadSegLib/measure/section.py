"""Principal axes of a 3D mask and the mask's cross-section on an arbitrary plane, all in RAS millimetres."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from FetalHeadSegLib.core.image import Image


@dataclass(frozen=True)
class PrincipalAxes:
    """Second-moment description of a solid shape.

    Attributes:
        centroid_ras: mean position of the voxel centres (mm).
        axes_ras: 3x3, columns are unit axes sorted by decreasing extent.
        semi_axes_mm: ``sqrt(5 * eigenvalue)``: the semi-axes of the solid ellipsoid with the same moments.
    """

    centroid_ras: np.ndarray
    axes_ras: np.ndarray
    semi_axes_mm: np.ndarray


def principal_axes(points_ras: np.ndarray) -> PrincipalAxes:
    """Principal axes of a solid shape given by its voxel centres, shape (N, 3), in mm.

    Each axis is signed so that its largest component is positive (a deterministic choice), and the third axis
    completes a right-handed frame.
    """
    centroid = points_ras.mean(axis=0)
    covariance = np.cov(points_ras - centroid, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, axes = np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]
    for column in range(2):
        if axes[np.argmax(np.abs(axes[:, column])), column] < 0:
            axes[:, column] *= -1.0
    axes[:, 2] = np.cross(axes[:, 0], axes[:, 1])
    return PrincipalAxes(centroid, axes, np.sqrt(5.0 * eigenvalues))


@dataclass(frozen=True)
class PlaneGrid:
    """A sampling grid on a plane: ``ras = origin + u * axis_u + v * axis_v`` for grid point (iu, iv).

    ``u = u_start + iu * step_mm`` and ``v = v_start + iv * step_mm``.
    """

    origin_ras: np.ndarray
    axis_u_ras: np.ndarray
    axis_v_ras: np.ndarray
    u_start: float
    v_start: float
    step_mm: float
    shape: tuple[int, int]

    @property
    def normal_ras(self) -> np.ndarray:
        normal = np.cross(self.axis_u_ras, self.axis_v_ras)
        return np.asarray(normal / np.linalg.norm(normal))

    def plane_to_ras(self, uv: np.ndarray) -> np.ndarray:
        """Map in-plane coordinates (N, 2), mm relative to ``origin_ras``, to RAS points (N, 3)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        return self.origin_ras + uv[:, :1] * self.axis_u_ras + uv[:, 1:] * self.axis_v_ras

    def grid_offset(self) -> np.ndarray:
        """In-plane coordinates (mm) of grid point (0, 0)."""
        return np.array([self.u_start, self.v_start])


def plane_grid_around(
    points_ras: np.ndarray, origin_ras: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray, step_mm: float
) -> PlaneGrid:
    """A grid on the plane (origin, axis_u, axis_v) covering the projection of ``points_ras`` with a margin."""
    relative = points_ras - origin_ras
    u, v = relative @ axis_u, relative @ axis_v
    margin = 3.0 * step_mm
    u0, v0 = float(u.min()) - margin, float(v.min()) - margin
    nu = int(np.ceil((float(u.max()) + margin - u0) / step_mm)) + 1
    nv = int(np.ceil((float(v.max()) + margin - v0) / step_mm)) + 1
    return PlaneGrid(origin_ras, axis_u, axis_v, u0, v0, step_mm, (nu, nv))


def sample_on_plane(volume: Image, grid: PlaneGrid) -> np.ndarray:
    """Trilinear samples of ``volume`` on ``grid``, shape ``grid.shape`` indexed (iu, iv); 0 outside the volume."""
    from scipy.ndimage import map_coordinates

    nu, nv = grid.shape
    iu, iv = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    uv = np.stack([grid.u_start + iu.ravel() * grid.step_mm, grid.v_start + iv.ravel() * grid.step_mm], axis=1)
    ras = grid.plane_to_ras(uv)
    ras_to_ijk = volume.ras_to_ijk()
    ijk = ras @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
    values = map_coordinates(np.asarray(volume.array, dtype=np.float32), ijk.T, order=1, mode="constant", cval=0.0)
    return np.asarray(values.reshape(nu, nv))
