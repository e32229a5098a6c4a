"""Scoring a 3D head model on a phantom with exact truth, shared by ``stress_3d.py`` and ``second_simulator_3d.py``
(the scripts of this folder import it as a sibling module)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def score_against_truth(
    segmenter: Any, image: Any, head: np.ndarray, truth: dict[str, Any], tta: bool
) -> tuple[dict[str, Any], np.ndarray, Any]:
    """Segment ``image`` (flip test-time augmentation when ``tta``) and compare with the true ``head`` mask.

    Returns:
        The record (Dice, HD95, the review decision, seconds, and the relative HC, BPD, OFD and volume errors in %
        against ``truth``'s ``hc_mm``, ``bpd_mm``, ``ofd_mm``, ``head_volume_ml``), the predicted head mask and the
        segmentation result.
    """
    from FetalHeadSegLib import InferenceOptions, segmentation_metrics
    from FetalHeadSegLib.phantom.generator import relative_errors

    start = time.perf_counter()
    result = segmenter.segment(image, InferenceOptions(tta=tta))
    seconds = time.perf_counter() - start
    prediction = np.asarray(result.labels.array == segmenter.bundle.head_label)
    metrics = segmentation_metrics(prediction, head, image.spacing_mm)
    record: dict[str, Any] = {
        "dice": metrics.dice,
        "hd95_mm": metrics.hd95_mm,
        "review_recommended": result.review.recommended,
        "review_reasons": result.review.reasons,
        "seconds": round(seconds, 2),
    }
    for name, error in relative_errors(result.biometry, truth).items():
        record[f"{name}_error_pct"] = 100.0 * error
    return record, prediction, result
