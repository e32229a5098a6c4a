"""The in-memory image: a voxel array in (X, Y, Z) index order plus its voxel-to-RAS affine.

One convention everywhere in FetalHeadSegLib:

- ``array[i, j, k]`` is indexed (X, Y, Z) = (column, row, slice) for images read from disk. 2D frames are
  single-slice images, shape ``(X, Y, 1)``.
- ``ijk_to_ras`` is a 4x4 matrix mapping homogeneous voxel indices ``(i, j, k, 1)`` to RAS millimetres
  (right, anterior, superior), the frame 3D Slicer uses. Its 3x3 part is ``direction @ diag(spacing_mm)``.

The only place that converts from or to ITK's (z, y, x) arrays and LPS frame is :mod:`FetalHeadSegLib.core.io`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from FetalHeadSegLib.core.errors import InputImageError

Matrix4x4 = npt.NDArray[np.float64]
"""A 4x4 homogeneous transform, float64."""


def make_ijk_to_ras(
    spacing_mm: tuple[float, float, float] | npt.ArrayLike,
    origin_ras: tuple[float, float, float] | npt.ArrayLike = (0.0, 0.0, 0.0),
    direction_ras: npt.ArrayLike | None = None,
) -> Matrix4x4:
    """Build a voxel-to-RAS affine from spacing, origin and direction cosines.

    Args:
        spacing_mm: voxel size along i, j, k in mm.
        origin_ras: RAS position of voxel (0, 0, 0) in mm.
        direction_ras: 3x3 matrix whose columns are the unit RAS directions of the i, j and k axes
            (identity when omitted).

    Returns:
        The 4x4 ``ijk_to_ras`` matrix.

    Example:
        >>> make_ijk_to_ras((0.5, 0.5, 2.0))[:3, :3].diagonal().tolist()
        [0.5, 0.5, 2.0]
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(3)
    direction = np.eye(3) if direction_ras is None else np.asarray(direction_ras, dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing[np.newaxis, :]
    affine[:3, 3] = np.asarray(origin_ras, dtype=np.float64).reshape(3)
    return affine


@dataclass(frozen=True, eq=False)
class Image:
    """A scalar image with its geometry.

    Attributes:
        array: voxel values, shape ``(X, Y, Z)``; a 2D frame has ``Z == 1``.
        ijk_to_ras: 4x4 voxel-index-to-RAS-mm affine.
    """

    array: np.ndarray
    ijk_to_ras: Matrix4x4

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise InputImageError(f"an image array must have 3 axes (X, Y, Z), got shape {self.array.shape}")
        if min(self.array.shape) == 0:
            raise InputImageError(f"the image has no voxels (shape {self.array.shape})")
        affine = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise InputImageError("the image geometry (ijk_to_ras) must be a finite 4x4 matrix")
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        if np.any(spacing <= 0) or abs(np.linalg.det(affine[:3, :3])) < 1e-12 * float(np.prod(spacing)):
            raise InputImageError(f"the image geometry is degenerate (voxel spacing {spacing.tolist()} mm)")
        object.__setattr__(self, "ijk_to_ras", affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (X, Y, Z)."""
        x, y, z = self.array.shape
        return int(x), int(y), int(z)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in mm."""
        norms = np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)
        return float(norms[0]), float(norms[1]), float(norms[2])

    @property
    def origin_ras(self) -> np.ndarray:
        """RAS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def direction_ras(self) -> np.ndarray:
        """3x3 matrix of unit column vectors: the RAS directions of the i, j, k axes."""
        return self.ijk_to_ras[:3, :3] / np.asarray(self.spacing_mm)[np.newaxis, :]

    @property
    def is_2d(self) -> bool:
        """True for single-slice images (2D frames)."""
        return self.array.shape[2] == 1

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in cubic millimetres."""
        return float(abs(np.linalg.det(self.ijk_to_ras[:3, :3])))

    def ras_to_ijk(self) -> Matrix4x4:
        """The inverse affine: RAS mm to continuous voxel indices."""
        return np.asarray(np.linalg.inv(self.ijk_to_ras), dtype=np.float64)

    def ijk_to_ras_points(self, ijk: npt.ArrayLike) -> np.ndarray:
        """Map voxel indices, shape (N, 3), to RAS mm, shape (N, 3)."""
        points = np.asarray(ijk, dtype=np.float64).reshape(-1, 3)
        return points @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def with_array(self, array: np.ndarray) -> Image:
        """A new image on the same grid holding ``array`` (which must have the same shape)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match the image grid {self.array.shape}")
        return Image(array, self.ijk_to_ras.copy())

    def with_spacing(self, spacing_mm: tuple[float, float, float]) -> Image:
        """The same voxels and orientation with another voxel size (origin kept)."""
        return Image(self.array, make_ijk_to_ras(spacing_mm, self.origin_ras, self.direction_ras))
