"""Quality-control pictures: orthogonal slices of an image with a mask's outline drawn over it (PNG)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from FetalHeadSegLib.core.image import Image

OUTLINE_RGB = (255, 200, 0)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    low, high = np.percentile(values, [0.5, 99.5])
    scaled = (values.astype(np.float64) - low) / max(high - low, 1e-12)
    return np.asarray(np.clip(scaled * 255.0, 0, 255).astype(np.uint8))


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    inside = mask != 0
    return np.asarray(inside & ~ndimage.binary_erosion(inside))


def _isotropic(plane: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Resample a (columns, rows) plane so that both pixel sizes are the smaller one (nearest neighbour)."""
    step = min(spacing)
    cols = np.minimum(
        (np.arange(int(round(plane.shape[0] * spacing[0] / step))) * step / spacing[0]).astype(int), plane.shape[0] - 1
    )
    rows = np.minimum(
        (np.arange(int(round(plane.shape[1] * spacing[1] / step))) * step / spacing[1]).astype(int), plane.shape[1] - 1
    )
    return plane[np.ix_(cols, rows)]


def orthogonal_slices(image: Image, mask: Image | None = None, center_ijk: Sequence[int] | None = None) -> np.ndarray:
    """An RGB picture (rows, columns, 3) of the k, j and i slices through ``center_ijk`` side by side.

    2D frames give the frame alone. The mask's outline is drawn in yellow. Each slice is shown with square
    pixels. Without ``center_ijk`` the slices pass through the mask's centroid (or the image centre).
    """
    if center_ijk is None:
        source = mask.array if mask is not None and mask.array.any() else np.ones(image.shape, dtype=bool)
        center_ijk = np.rint(np.argwhere(source != 0).mean(axis=0)).astype(int).tolist()
    i, j, k = (int(v) for v in center_ijk)
    sx, sy, sz = image.spacing_mm
    grey = _to_uint8(image.array)
    outline = None if mask is None else np.asarray(mask.array != 0)
    views: list[tuple[Any, tuple[float, float]]] = [(np.s_[:, :, k], (sx, sy))]
    if not image.is_2d:
        views += [(np.s_[:, j, :], (sx, sz)), (np.s_[i, :, :], (sy, sz))]
    tiles = []
    for index, spacing in views:
        plane = _isotropic(grey[index], spacing)
        rgb = np.repeat(plane[:, :, None], 3, axis=2)
        if outline is not None:
            edge = _isotropic(_outline(outline[index]).astype(np.uint8), spacing) != 0
            rgb[edge] = OUTLINE_RGB
        tiles.append(rgb.transpose(1, 0, 2))  # (rows, columns, 3)
    height = max(tile.shape[0] for tile in tiles)
    padded = [np.pad(tile, ((0, height - tile.shape[0]), (0, 4), (0, 0))) for tile in tiles]
    return np.concatenate(padded, axis=1)[:, :-4]


def write_png(rgb: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an RGB (rows, columns, 3) uint8 picture as PNG, atomically."""
    import SimpleITK as sitk

    from FetalHeadSegLib.core.atomic import atomic_output_dir

    target = Path(path)
    with atomic_output_dir(target.parent) as staging:
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(rgb), isVector=True), str(staging / target.name))
    return target
