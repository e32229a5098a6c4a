"""Segmentation metrics against biometry.md §6-7 (vectors 17-19)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from FetalHeadSegLib.measure.metrics import segmentation_metrics


def square(low: int, high: int, col_shift: int = 0) -> np.ndarray:
    mask = np.zeros((40, 40), dtype=bool)
    mask[low : high + 1, low + col_shift : high + 1 + col_shift] = True
    return mask


def test_vector_17_nested_squares() -> None:
    result = segmentation_metrics(square(10, 29), square(12, 27))
    assert result.dice == pytest.approx(0.780488, abs=1e-4)
    assert result.hd_mm == pytest.approx(2.828427, abs=1e-4)
    assert result.hd95_mm == pytest.approx(2.384158, abs=1e-4)  # the pooled convention would give 2.236068
    assert result.assd_mm == pytest.approx(2.038252, abs=1e-4)  # the mean of means would give 2.034225


def test_vector_18_anisotropic_spacing() -> None:
    result = segmentation_metrics(square(10, 29), square(10, 29, col_shift=2), spacing_mm=(1.0, 0.5))
    assert result.dice == pytest.approx(0.9, abs=1e-4)
    assert result.hd_mm == pytest.approx(1.0, abs=1e-4)
    assert result.hd95_mm == pytest.approx(1.0, abs=1e-4)
    assert result.assd_mm == pytest.approx(0.513158, abs=1e-4)


def test_vector_19_both_empty() -> None:
    result = segmentation_metrics(np.zeros((5, 5)), np.zeros((5, 5)))
    assert result.dice == 1.0
    assert math.isnan(result.hd95_mm) and math.isnan(result.assd_mm)
    assert result.empty == "both"


def test_one_empty_mask_gives_infinite_distances() -> None:
    result = segmentation_metrics(np.zeros((40, 40)), square(10, 29))
    assert result.dice == 0.0 and math.isinf(result.hd95_mm)
    assert result.empty == "prediction"


def test_3d_identical_masks() -> None:
    mask = np.zeros((12, 12, 12), dtype=bool)
    mask[3:9, 2:10, 4:8] = True
    result = segmentation_metrics(mask, mask, spacing_mm=(0.5, 1.0, 2.0))
    assert (result.dice, result.jaccard, result.hd_mm, result.assd_mm) == (1.0, 1.0, 0.0, 0.0)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        segmentation_metrics(np.zeros((3, 3)), np.zeros((3, 4)))
