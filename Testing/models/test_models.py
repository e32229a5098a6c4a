"""The shipped models, each on one bundled case it never saw in training (fast, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from FetalHeadSegLib.core.io import read_image
from FetalHeadSegLib.core.samples import get_sample
from FetalHeadSegLib.inference.engine import InferenceOptions, load_model
from FetalHeadSegLib.measure.aop import angle_of_progression
from FetalHeadSegLib.measure.metrics import segmentation_metrics
from FetalHeadSegLib.models.bundle import verify_bundle
from FetalHeadSegLib.models.catalog import default_model, find_model, list_models

SHIPPED = {
    "fetal-head-3d-cascade": (3, "head"),
    "hc18-plane-2d": (2, "head"),
    "psfhs-intrapartum-2d": (2, "intrapartum"),
}


def test_catalog_lists_the_shipped_models_with_valid_checksums() -> None:
    bundled = {entry.id: entry for entry in list_models() if entry.source == "bundled"}
    assert set(bundled) == set(SHIPPED)
    for model_id, (dimension, task) in SHIPPED.items():
        bundle = find_model(model_id)
        verify_bundle(bundle)
        assert (bundle.dimension, bundle.task) == (dimension, task)
        card = bundle.model_card
        keys = ("intended_use", "training_data", "license", "citation", "limitations", "retraining", "timing")
        for key in (*keys, "evaluation"):
            assert card.get(key), f"{model_id}: model card lacks {key}"
    assert default_model(3).id == "fetal-head-3d-cascade"
    assert default_model(2).id == "hc18-plane-2d"
    assert default_model(2, "intrapartum").id == "psfhs-intrapartum-2d"


def test_3d_cascade_segments_the_bundled_phantom() -> None:
    """The issue's target: Dice above 0.95 against the exact mask (the shipped 0.3.22-cpu cascade, with the flips it
    runs by default, measures 0.984, HC 223.3 mm against 224.4 mm, volume 133.8 mL against 132.9 mL), and a good
    result is neither sent for review nor flagged for its flips' disagreement (5.4 % of the head, within the
    model's calibrated 10.3 %)."""
    sample = get_sample("phantom3d_s000001")
    assert sample.annotation_path is not None
    image, truth_mask = read_image(sample.image_path), read_image(sample.annotation_path)
    result = load_model("fetal-head-3d-cascade", "cpu").segment(image)
    metrics = segmentation_metrics(result.labels.array == 1, truth_mask.array > 0, image.spacing_mm)
    assert metrics.dice > 0.95
    truth = json.loads((sample.image_path.parent / sample.info["truth"]).read_text())
    assert result.biometry is not None
    assert result.biometry.hc_mm == pytest.approx(truth["hc_mm"], rel=0.04)
    assert result.biometry.head_volume_ml == pytest.approx(truth["head_volume_ml"], rel=0.08)
    assert not result.review.recommended, result.review.reasons
    assert not any(flag.code == "tta_disagreement_high" for flag in result.flags), result.flags


def test_hc18_model_measures_the_held_out_frame() -> None:
    sample = get_sample("hc18_207_HC")
    image = read_image(sample.image_path, spacing_mm=sample.info["pixel_size_mm"])
    result = load_model("hc18-plane-2d", "cpu").segment(image)
    assert result.biometry is not None
    assert result.biometry.hc_mm == pytest.approx(sample.info["reference_hc_mm"], abs=5.0)


def test_hc18_model_beside_a_similar_blob_measures_the_expert_head_and_asks_for_review(hc18_dir: Path) -> None:
    """HC18 frame 023_2HC (a validation subject; HC 68 mm) shows a second round structure beside the head, which
    hc18-plane-2d 0.3.0 measured instead of the head without --tta. The model measures the head the expert outlined
    with and without flips; the HCs of the frame and of its mirror, measured alone, still lie over 3 mm apart, so
    both results ask for review (the model card's limitations)."""
    from FetalHeadSegLib.measure.hc18 import ellipse_from_outline, rasterize_ellipse, read_pixel_size_csv

    pixel_size_mm = read_pixel_size_csv(hc18_dir / "training_set_pixel_size_and_HC.csv")["023_2HC.png"].pixel_size_mm
    image = read_image(hc18_dir / "training_set" / "023_2HC.png", spacing_mm=pixel_size_mm)
    model = load_model("hc18-plane-2d", "cpu")
    outline = read_image(hc18_dir / "training_set" / "023_2HC_Annotation.png").array[:, :, 0] > 0
    expert = rasterize_ellipse(ellipse_from_outline(outline), outline.shape[:2])
    for tta in (False, True):
        result = model.segment(image, InferenceOptions(tta=tta))
        assert segmentation_metrics(result.labels.array[:, :, 0] == 1, expert).dice > 0.85
        assert result.review is not None and "flipped_sizes_disagree" in result.review.reasons


def test_psfhs_model_finds_both_structures_and_the_angle() -> None:
    sample = get_sample("psfhs_03744")
    assert sample.annotation_path is not None
    image, truth = read_image(sample.image_path), read_image(sample.annotation_path)
    result = load_model("psfhs-intrapartum-2d", "cpu").segment(image)
    predicted = result.labels.array[:, :, 0]
    for value in (1, 2):
        assert segmentation_metrics(predicted == value, truth.array[:, :, 0] == value).dice > 0.8
    assert result.biometry is not None and result.biometry.aop is not None
    assert result.biometry.aop.aop_deg == pytest.approx(angle_of_progression(truth).aop_deg, abs=10.0)
    assert np.isin(np.unique(predicted), [0, 1, 2]).all()
    # the review reads the angle's sensitivity to the head's border from the measurement itself
    assert result.review is not None and result.biometry.aop.border_sensitivity_deg is not None
    sensitivity = result.review.signals.aop_border_sensitivity_deg
    assert sensitivity == pytest.approx(result.biometry.aop.border_sensitivity_deg, abs=1e-4) and sensitivity > 0


def test_a_tta_result_is_judged_by_the_thresholds_calibrated_for_tta(tmp_path: Path) -> None:
    """The engine applies ``review_tta`` to results made with --tta and ``review`` to the others."""
    import shutil

    from FetalHeadSegLib.measure.review import ReviewPolicy
    from FetalHeadSegLib.models.card import write_review_policy

    bundle = shutil.copytree(find_model("hc18-plane-2d").path, tmp_path / "hc18")
    never = {field: None for field in ReviewPolicy().to_dict() if field != "calibration"}
    write_review_policy(bundle, ReviewPolicy(**never).to_dict())
    always_if_flipped = ReviewPolicy(**{**never, "max_tta_disagreement": -1.0})  # any disagreement, even none
    write_review_policy(bundle, always_if_flipped.to_dict(), tta=True)
    model = load_model(bundle)
    sample = get_sample("hc18_207_HC")
    frame = read_image(sample.image_path, spacing_mm=sample.info["pixel_size_mm"])
    assert not model.segment(frame, InferenceOptions(tta=False)).review.recommended
    tta = model.segment(frame, InferenceOptions(tta=True)).review
    assert tta.recommended and tta.reasons == ["flipped_predictions_disagree"]
