"""Sliding windows: full coverage, exact blending arithmetic, single-window equivalence."""

from __future__ import annotations

import numpy as np
import pytest

from FetalHeadSegLib.inference.tiling import gaussian_weight, sliding_window, window_starts


@pytest.mark.parametrize(("size", "window"), [(100, 32), (64, 64), (40, 64), (129, 48)])
def test_windows_cover_everything(size: int, window: int) -> None:
    starts = window_starts(size, window, 0.5)
    covered = np.zeros(size, bool)
    for start in starts:
        covered[start : start + min(window, size)] = True
    assert covered.all() and starts[0] == 0


def test_blending_is_exact_for_a_voxelwise_model() -> None:
    """Any voxel-wise prediction (no spatial context) must come out identical whatever the tiling."""
    volume = np.random.default_rng(1).random((2, 40, 24, 32)).astype(np.float32)

    def predict(tile: np.ndarray) -> np.ndarray:
        return np.stack([tile[0] * 2 - tile[1], np.tanh(tile[1])])

    tiled = sliding_window(predict, volume, (16, 16, 16), overlap=0.5)
    np.testing.assert_allclose(tiled, predict(volume), rtol=1e-5, atol=1e-6)


def test_one_window_equals_the_whole_volume() -> None:
    volume = np.random.default_rng(2).random((1, 16, 16, 8)).astype(np.float32)
    calls = []

    def predict(tile: np.ndarray) -> np.ndarray:
        calls.append(tile.shape)
        return tile**2

    np.testing.assert_allclose(sliding_window(predict, volume, (32, 32, 32)), volume**2, rtol=1e-6)
    assert calls == [(1, 16, 16, 8)]


def test_gaussian_weight_peaks_in_the_centre() -> None:
    weight = gaussian_weight((9, 9))
    assert weight[4, 4] == 1.0 and weight.min() >= 1e-3 and weight[0, 0] < weight[4, 0] < weight[4, 4]
