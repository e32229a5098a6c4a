"""review_recommended on constructed good and bad results: each signal fires on the defect it stands for and
stays quiet on a clean, well-placed head."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.measure.biometry import measure_biometry
from FetalHeadSegLib.measure.review import REASONS, ReviewPolicy, ReviewSignals, decide, review_signals

SPACING = (0.3, 0.3, 1.0)


def ellipse_mask(shape=(400, 300), centre=(200, 150), axes=(110, 90), angle=0.3) -> np.ndarray:
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    u, v = x - centre[0], y - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    return ((((c * u + s * v) / axes[0]) ** 2 + ((-s * u + c * v) / axes[1]) ** 2) <= 1.0)[:, :, None]


def signals_of(head: np.ndarray, probability: np.ndarray | None = None, **extra) -> ReviewSignals:
    probability = head.astype(np.float32) if probability is None else probability
    biometry = measure_biometry(Image(head.astype(np.uint8), make_ijk_to_ras(SPACING)))
    ellipse = biometry.ellipse
    return review_signals(
        probability,
        head,
        SPACING,
        True,
        mean_semi_axis_mm=0.5 * (ellipse.semi_major + ellipse.semi_minor),
        fit_residual_mm=ellipse.residual_rms,
        hc_mm=biometry.hc_mm,
        **extra,
    )


def test_a_clean_head_in_the_middle_needs_no_review() -> None:
    review = decide(signals_of(ellipse_mask()), ReviewPolicy())
    assert not review.recommended and review.reasons == []
    assert review.to_dict()["review_recommended"] is False


@pytest.mark.parametrize(
    "defect, reason",
    [
        ("fuzzy", "uncertain_border"),
        ("ragged", "irregular_border"),
        ("cut", "cut_by_field_of_view"),
        ("tiny", "head_too_small_for_field_of_view"),
        ("levels", "cascade_levels_disagree"),
        ("flips", "flipped_predictions_disagree"),
        ("angles", "flipped_angles_disagree"),
        ("sizes", "flipped_sizes_disagree"),
        ("sensitive", "angle_sensitive_to_head_border"),
    ],
)
def test_each_defect_recommends_review_for_its_reason(defect: str, reason: str) -> None:
    head = ellipse_mask()
    extra: dict = {}
    probability = None
    if defect == "fuzzy":  # a border smeared over ~25 px on a head of radius ~100 px
        probability = ndimage.gaussian_filter(head[:, :, 0].astype(np.float32), 12)[:, :, None]
    elif defect == "ragged":  # lobes cut into the border
        angles = np.arctan2(*np.meshgrid(np.arange(400) - 200, np.arange(300) - 150, indexing="ij"))
        lobes = (np.sin(8 * angles) > 0.6)[:, :, None] & ~ellipse_mask(axes=(85, 65))
        head = head & ~lobes
    elif defect == "cut":
        head = ellipse_mask(centre=(60, 150))
    elif defect == "tiny":
        head = ellipse_mask(axes=(15, 12))
    elif defect == "levels":
        extra["cascade_dice"] = 0.6
    elif defect == "angles":  # the AoP measured on each flipped pass alone differs by 30 deg
        extra["aop_flip_spread_deg"] = 30.0
    elif defect == "sizes":  # the HCs measured on each flipped pass alone lie 8 mm apart
        extra["hc_flip_spread_mm"] = 8.0
    elif defect == "sensitive":  # a one-pixel border error turns the angle by 3 deg (a calibrated limit of 1.5)
        extra["aop_border_sensitivity_deg"] = 3.0
    else:
        extra["tta_disagreement"] = 0.3
    policy = ReviewPolicy(max_aop_border_sensitivity_deg=1.5)  # off by default: it needs a calibration
    assert not ReviewPolicy().reasons(ReviewSignals(aop_border_sensitivity_deg=3.0))
    review = decide(signals_of(head, probability, **extra), policy)
    assert review.recommended and reason in review.reasons, review.reasons


def test_the_uncertain_band_in_mm_is_the_blurred_border_width_whatever_the_head_size() -> None:
    """A border blurred by the same Gaussian (sigma 4 px, 1.2 mm) on a small and a large head: the head probability
    lies between 0.1 and 0.9 over 2 * 1.2816 sigma = 3.08 mm across a straight edge (the normal quantiles), on
    either head, while the width relative to the head shrinks as the head grows. The band is measured per border
    pixel of the 4-connected outline, which counts a little fewer pixels than the curve is long: hence the 15 %."""
    width_mm = 2 * 1.2816 * 4 * SPACING[0]
    signals = []
    for axes in ((40, 35), (130, 100)):
        head = ellipse_mask(axes=axes)
        probability = ndimage.gaussian_filter(head[:, :, 0].astype(np.float32), 4)[:, :, None]
        signals.append(signals_of(head, probability))
    small, large = signals
    assert small.uncertain_band_mm == pytest.approx(width_mm, rel=0.15)
    assert large.uncertain_band_mm == pytest.approx(small.uncertain_band_mm, rel=0.03)
    assert large.uncertain_band == pytest.approx(small.uncertain_band * 37.5 / 115, rel=0.05)
    policy = ReviewPolicy(max_uncertain_band=None, max_uncertain_band_mm=3.0)
    assert decide(large, policy).reasons == ["uncertain_border_wide_in_mm"]
    assert ReviewPolicy().max_uncertain_band_mm is None  # off until calibrated: the width that matters is the model's


def test_an_implausible_size_recommends_review_and_policies_round_trip() -> None:
    signals = ReviewSignals(hc_mm=520.0)
    assert decide(signals, ReviewPolicy()).reasons == ["implausible_size"]
    policy = ReviewPolicy(max_uncertain_band=0.05, calibration={"flag_rate": 0.15})
    assert ReviewPolicy.from_dict(policy.to_dict()) == policy
    assert ReviewPolicy.from_dict(None) == ReviewPolicy()


def test_a_calibrated_policy_from_before_a_rule_existed_leaves_that_rule_off() -> None:
    """A bundle calibrated before hc_flip_spread_mm existed (its policy has no such key) must not meet the
    uncalibrated default, which may not suit its units (PSFHS lengths are pixels); an uncalibrated one does."""
    calibrated = ReviewPolicy(max_fit_residual=0.06, calibration={"recall": 0.5}).to_dict()
    del calibrated["max_hc_flip_spread_mm"]
    signals = ReviewSignals(hc_flip_spread_mm=40.0)
    assert ReviewPolicy.from_dict(calibrated).max_hc_flip_spread_mm is None
    assert decide(signals, ReviewPolicy.from_dict(calibrated)).reasons == []
    assert decide(signals, ReviewPolicy.from_dict({"max_fit_residual": 0.06})).reasons == ["flipped_sizes_disagree"]


def test_calibration_catches_the_bad_cases_within_the_flag_budget() -> None:
    """Synthetic validation set: bad cases have a wide uncertain band or a cut head; one signal is pure noise."""
    from FetalHeadSegLib.measure.review import calibrate, review_rates

    rng = np.random.default_rng(0)
    cases = []
    for index in range(200):
        bad = index % 10 == 0  # 10 % bad
        band = rng.uniform(0.1, 0.2) if bad and index % 20 == 0 else rng.uniform(0.0, 0.06)
        border = rng.uniform(0.2, 0.5) if bad and index % 20 == 10 else 0.0
        cases.append((ReviewSignals(uncertain_band=band, border_contact=border, fit_residual=rng.uniform()), bad))
    policy = calibrate(cases, max_flag_rate=0.15)
    rates = review_rates(policy, cases)
    assert rates["flag_rate"] <= 0.15 and rates["recall"] == 1.0
    assert policy.max_fit_residual is None  # the noise signal was never worth its flags
    assert policy.calibration is not None and policy.calibration["recall"] == 1.0


def test_calibration_turns_off_a_plausibility_rule_that_alone_breaks_the_budget() -> None:
    """Frames whose pixel size is not physical (every HC 'implausible'): the rule would flag everything."""
    from FetalHeadSegLib.measure.review import calibrate

    cases = [(ReviewSignals(hc_mm=470.0, uncertain_band=0.2 if i < 5 else 0.01), i < 5) for i in range(50)]
    policy = calibrate(cases, max_flag_rate=0.15)
    assert policy.plausible_hc_mm is None and policy.calibration is not None
    assert policy.calibration["flag_rate"] == 0.1 and policy.calibration["recall"] == 1.0
    kept = calibrate([(ReviewSignals(hc_mm=200.0), False)] * 9 + [(ReviewSignals(hc_mm=520.0), True)])
    assert kept.plausible_hc_mm is not None and kept.calibration["recall"] == 1.0


def test_a_good_case_budget_catches_a_majority_of_failures_without_flagging_the_good_cases() -> None:
    """A model wrong on 60 % of a hard set: an overall 15 % budget cannot catch its failures; a budget on false
    alarms can, and flags at most 15 % of the good cases."""
    from FetalHeadSegLib.measure.review import calibrate, review_rates

    rng = np.random.default_rng(1)
    cases = []
    for index in range(100):
        bad = index % 5 < 3
        band = rng.uniform(0.12, 0.4) if bad else rng.uniform(0.02, 0.14)
        cases.append((ReviewSignals(uncertain_band=band, field_fill=rng.uniform(0.3, 0.9)), bad))
    overall = review_rates(calibrate(cases, 0.15), cases)
    assert overall["flag_rate"] <= 0.15 and overall["recall"] < 0.3
    policy = calibrate(cases, 0.15, budget_of="good")
    rates = review_rates(policy, cases)
    good = [signals for signals, bad in cases if not bad]
    false_alarms = sum(bool(policy.reasons(signals)) for signals in good)
    assert false_alarms <= 0.15 * len(good) and rates["recall"] >= 0.8
    assert policy.calibration is not None and policy.calibration["budget_of"] == "good"
    with pytest.raises(ValueError, match="budget_of"):
        calibrate(cases, 0.15, budget_of="bad")


def test_cross_validation_exposes_thresholds_that_only_fit_their_own_cases() -> None:
    """Signals unrelated to the outcome: thresholds chosen on the same cases seem to catch bad ones, but on cases
    they did not see they catch no more than chance (the flag rate); a signal that separates keeps its recall."""
    from FetalHeadSegLib.measure.review import calibrate, cross_validated_rates, review_rates

    rng = np.random.default_rng(2)
    noise = [
        (
            ReviewSignals(uncertain_band=rng.uniform(), fit_residual=rng.uniform(), border_contact=rng.uniform()),
            i % 10 == 0,
        )
        for i in range(200)
    ]
    in_sample = review_rates(calibrate(noise, 0.15), noise)
    unseen = cross_validated_rates(noise, 0.15)
    assert unseen["folds"] == 5 and unseen["cases"] == 200 and unseen["bad_cases"] == 20
    assert in_sample["recall"] >= 0.3 and unseen["recall"] <= unseen["flag_rate"] + 0.05
    separable = [
        (ReviewSignals(uncertain_band=0.5 if i % 10 == 0 else rng.uniform(0.0, 0.1)), i % 10 == 0) for i in range(200)
    ]
    assert cross_validated_rates(separable, 0.15)["recall"] == 1.0
    assert cross_validated_rates(separable, 0.15) == cross_validated_rates(separable, 0.15)  # deterministic


def test_the_readme_explains_every_reason_a_review_can_give() -> None:
    """A clinician reads review_reasons in the Slicer table and summary.csv: each must have its row in README's
    table (the reasons are the engine's own list, so a new rule without a row fails here)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`") for line in readme.splitlines() if line.startswith("| `")}
    assert set(REASONS) <= rows, sorted(set(REASONS) - rows)


def test_without_flips_the_review_reads_the_border_of_the_frame_and_its_mirror_averaged() -> None:
    """The mirror check's two passes find the same disc 10 px apart. Their mean head probability is uncertain (0.5)
    where one pass says head and the other does not: a crescent whose width across the border is 10 |cos theta| px,
    on average 2 * 10 / pi px around the disc, which the review reads as it reads a TTA result's. The result itself
    (the unflipped pass, a sharp border) has no uncertain zone; with TTA the result already is the mean."""
    from FetalHeadSegLib.inference.outcome import review_probability
    from FetalHeadSegLib.inference.roi_cascade import CascadeOutput

    first, second = ellipse_mask(axes=(100, 100)), ellipse_mask(centre=(210, 150), axes=(100, 100))

    def classes(head: np.ndarray) -> np.ndarray:
        return np.stack([1.0 - head, head]).astype(np.float32)

    output = CascadeOutput(
        classes(first), None, None, [], pass_probabilities=lambda: iter(map(classes, (first, second)))
    )
    averaged = review_probability(output, 1, tta=False)
    assert signals_of(first, averaged).uncertain_band_mm == pytest.approx(2 * 10 / np.pi * SPACING[0], rel=0.15)
    assert signals_of(first, review_probability(output, 1, tta=True)).uncertain_band_mm == 0.0
    assert np.array_equal(review_probability(CascadeOutput(classes(first), None, None, []), 1, False), first)
