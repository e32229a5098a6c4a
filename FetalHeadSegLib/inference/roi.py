"""The head's region: a box of voxels found on one grid, carried to another through RAS, cropped and pasted back
exactly. The coarse-to-fine cascade runs its finer levels on this region only (nnU-Net's 3d_lowres -> cascade).

A box is a pair of inclusive-exclusive index bounds on a given image's grid; crops keep the exact geometry (the
cropped image's origin is the RAS position of the box's first voxel), so a crop pasted back lands on the same
voxels it came from.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from FetalHeadSegLib.core.image import Image, make_ijk_to_ras


@dataclass(frozen=True)
class Box:
    """Voxel bounds ``start`` (inclusive) to ``stop`` (exclusive) along i, j, k of one image's grid."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    def __post_init__(self) -> None:
        if any(b <= a for a, b in zip(self.start, self.stop, strict=True)):
            raise ValueError(f"an empty box: {self.start} to {self.stop}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.stop[0] - self.start[0], self.stop[1] - self.start[1], self.stop[2] - self.start[2])

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return (
            slice(self.start[0], self.stop[0]),
            slice(self.start[1], self.stop[1]),
            slice(self.start[2], self.stop[2]),
        )


def whole_box(image: Image) -> Box:
    """The box covering every voxel of ``image``."""
    return Box((0, 0, 0), image.shape)


def foreground_box(
    mask: Image,
    margin_mm: float,
    margin_high_mm: npt.ArrayLike | None = None,
    margin_low_mm: npt.ArrayLike | None = None,
) -> Box | None:
    """The bounding box of ``mask``'s non-zero voxels grown by ``margin_mm`` on every side (in-plane only for a
    2D frame), clipped to the image; None when the mask is empty.

    ``margin_low_mm`` / ``margin_high_mm`` (three values) replace the margin before / after the mask along each
    axis (training draws them to imitate an imperfect coarse level).
    """
    found = np.nonzero(mask.array)
    if not found[0].size:
        return None
    spacing = np.asarray(mask.spacing_mm)
    low_mm = np.full(3, margin_mm) if margin_low_mm is None else np.asarray(margin_low_mm, dtype=np.float64)
    high_mm = np.full(3, margin_mm) if margin_high_mm is None else np.asarray(margin_high_mm, dtype=np.float64)
    grow_low, grow_high = np.ceil(low_mm / spacing).astype(int), np.ceil(high_mm / spacing).astype(int)
    if mask.is_2d:
        grow_low[2] = grow_high[2] = 0
    low = np.maximum(np.array([axis.min() for axis in found]) - grow_low, 0)
    high = np.minimum(np.array([axis.max() for axis in found]) + 1 + grow_high, mask.shape)
    return Box(_triple(low), _triple(high))


def box_on_grid(box: Box, source: Image, target: Image) -> Box:
    """The smallest box of ``target``'s voxels covering the physical region of ``box`` on ``source``'s grid."""
    corners = np.array(list(itertools.product(*[(a - 0.5, b - 0.5) for a, b in zip(box.start, box.stop, strict=True)])))
    ras = source.ijk_to_ras_points(corners)
    ijk = (np.c_[ras, np.ones(len(ras))] @ target.ras_to_ijk().T)[:, :3]
    low = np.maximum(np.floor(ijk.min(axis=0) + 0.5).astype(int), 0)
    high = np.minimum(np.ceil(ijk.max(axis=0) + 0.5).astype(int), target.shape)
    if target.is_2d:
        low[2], high[2] = 0, 1
    high = np.maximum(high, low + 1)
    return Box(_triple(low), _triple(high))


def crop(image: Image, box: Box) -> Image:
    """The voxels of ``box`` as an image with exact geometry (same spacing and direction, origin moved)."""
    origin = image.ijk_to_ras_points(np.asarray(box.start, dtype=np.float64))[0]
    affine = make_ijk_to_ras(image.spacing_mm, origin, image.direction_ras)
    return Image(np.ascontiguousarray(image.array[box.slices]), affine)


def paste(target: np.ndarray, box: Box, values: np.ndarray) -> np.ndarray:
    """A copy of ``target`` (..., X, Y, Z) with ``values`` (..., box shape) written into ``box``."""
    if values.shape[-3:] != box.shape:
        raise ValueError(f"values of shape {values.shape[-3:]} do not fill the box {box.shape}")
    out = target.copy()
    out[(Ellipsis, *box.slices)] = values
    return out


def _triple(values: np.ndarray) -> tuple[int, int, int]:
    return int(values[0]), int(values[1]), int(values[2])
