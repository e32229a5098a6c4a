"""Mask clean-up shared by segmentation and biometry: largest connected component and hole filling."""

from __future__ import annotations

import numpy as np


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Components of a boolean (X, Y, Z) mask with full connectivity (26 in 3D; 8 within a 2D frame).

    Returns the label array (0 = background) and the voxel count of each component, in label order.
    """
    from scipy import ndimage

    structure = np.ones((3, 3, 3), dtype=bool)
    if mask.shape[2] == 1:
        structure[:, :, (0, 2)] = False  # in-plane neighbours only
    labelled, _ = ndimage.label(mask, structure=structure)
    return labelled, np.bincount(labelled.ravel())[1:]


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a boolean mask (an empty mask stays empty)."""
    labelled, sizes = connected_components(mask)
    if sizes.size == 0:
        return np.zeros(mask.shape, dtype=bool)
    return np.asarray(labelled == int(np.argmax(sizes)) + 1)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes: in 3D for volumes, in the frame's plane for single-slice (X, Y, 1) masks."""
    from scipy import ndimage

    if mask.shape[2] == 1:
        return np.asarray(ndimage.binary_fill_holes(mask[:, :, 0]))[:, :, np.newaxis]
    return np.asarray(ndimage.binary_fill_holes(mask))


def clean_label_map(labels: np.ndarray, values: list[int]) -> np.ndarray:
    """Each label reduced to its largest component with holes filled (later labels win where they overlap)."""
    cleaned = np.zeros(labels.shape, dtype=np.uint8)
    for value in values:
        region = labels == value
        if region.any():
            cleaned[fill_holes(keep_largest_component(region))] = value
    return cleaned
