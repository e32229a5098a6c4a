"""Sliding-window prediction with Gaussian blending: the fallback when a whole volume does not fit in memory.

With InstanceNorm a tile's statistics differ from the whole volume's, so tiled output differs slightly from
whole-volume output; large windows keep the difference small (``method.md`` §1.7).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of windows of ``window`` voxels covering ``size`` with at least ``overlap`` overlap."""
    if window >= size:
        return [0]
    stride = max(1, int(window * (1.0 - overlap)))
    count = int(math.ceil((size - window) / stride)) + 1
    return sorted({int(round(i * (size - window) / (count - 1))) for i in range(count)})


def gaussian_weight(shape: tuple[int, ...], sigma_fraction: float = 0.125) -> np.ndarray:
    """Blending weights: a Gaussian centred on the window (sigma = 1/8 of each size), never exactly zero."""
    axes = [np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2.0) / max(n * sigma_fraction, 1e-6)) ** 2) for n in shape]
    weight = axes[0]
    for axis in axes[1:]:
        weight = np.multiply.outer(weight, axis)
    return np.asarray(np.maximum(weight / weight.max(), 1e-3), dtype=np.float32)


def sliding_window(
    predict: Callable[[np.ndarray], np.ndarray],
    volume: np.ndarray,
    window: tuple[int, ...],
    overlap: float = 0.5,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Predict ``volume`` (C, *spatial) tile by tile and blend the tiles' outputs (K, *window).

    Args:
        predict: maps a (C, *window) tile to (K, *window) outputs (e.g. class probabilities).
        volume: the input, channels first.
        window: tile size per spatial axis (clipped to the volume's size).
        overlap: fraction of each window shared with its neighbour.
        on_tile: called with (tiles done, tiles in all) after each tile (progress and cancellation).

    Returns:
        (K, *spatial) blended outputs.
    """
    spatial = volume.shape[1:]
    window = tuple(min(w, s) for w, s in zip(window, spatial, strict=True))
    starts = [window_starts(s, w, overlap) for s, w in zip(spatial, window, strict=True)]
    positions = list(itertools.product(*starts))
    weight = gaussian_weight(window)
    total: np.ndarray | None = None
    norm = np.zeros(spatial, dtype=np.float32)
    for done, corner in enumerate(positions, start=1):
        region = tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True))
        output = predict(volume[(slice(None), *region)])
        if total is None:
            total = np.zeros((output.shape[0], *spatial), dtype=np.float32)
        total[(slice(None), *region)] += output * weight
        norm[region] += weight
        if on_tile is not None:
            on_tile(done, len(positions))
    assert total is not None
    return np.asarray(total / norm)
