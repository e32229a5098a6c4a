"""One decision a clinician can trust: should a person look at this result before using it?

Each segmentation yields a few signals that predict a bad measurement: how wide the zone of uncertain head
probability is, compared with the head and in mm (a blurred or split border), how far the border strays from its
ellipse, how much of the head lies on the image border (cut off), how much of the field of view the head fills,
whether the cascade's coarse and fine levels agree, whether flipped predictions agree (test-time augmentation),
whether the HC and the angle of progression stay the same when measured on each flipped prediction alone (2D frames:
TTA or the mirror check), how far the angle of progression turns when the head's border moves by a pixel (a head
close to the symphysis' apex turns it most), whether the size is one a fetus can have. A :class:`ReviewPolicy`
turns them into ``review_recommended`` and the reasons.

The thresholds belong to a model: ``training.evaluate --calibrate-review`` chooses them on the model's
validation part (at most 15-20 % of frames flagged while catching the frames whose HC is off by more than 5 mm;
3D: Dice below 0.9; or, with ``--review-budget good``, at most that share of the good cases flagged) and writes
them into the bundle, with the flag rate, recall and precision in its card.
The defaults below are for models without a calibration.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from FetalHeadSegLib.measure.quality import PLAUSIBLE_HC_MM

UNCERTAIN_PROBABILITY = (0.1, 0.9)
"""Head probabilities in this range count as uncertain."""


@dataclass(frozen=True)
class ReviewSignals:
    """Measurements of one result that predict a bad measurement (None where not defined).

    Attributes:
        uncertain_band: mean width of the zone of uncertain head probability along the head's border, as a
            fraction of the head's mean radius.
        uncertain_band_mm: the same width in mm. The border may lie anywhere within it, and a border that moves by
            d mm moves the HC by about 2 pi d mm, so an absolute width predicts an HC error in mm (the HC18
            criterion: more than 5 mm) better than the width relative to the head: the same relative width is
            several times as many mm on a third-trimester head as on a first-trimester one.
        fit_residual: RMS distance of the border to its fitted ellipse, as a fraction of the mean semi-axis.
        border_contact: share of the head's border voxels that lie on the image's edge (0: inside the image).
        field_fill: the head's largest extent divided by the image's extent along the same axis.
        cascade_dice: Dice between the coarse and the final head (coarse-to-fine cascades).
        tta_disagreement: share of the head on which flipped predictions disagree (with TTA).
        hc_flip_spread_mm: largest difference between the HCs measured on each flipped prediction alone (2D frames,
            TTA or the mirror check): the border moves when the frame is mirrored, by a length comparable with the
            HC error that makes a measurement bad.
        aop_flip_spread_deg: largest difference between the angles of progression measured on each flipped
            prediction alone (intrapartum frames, TTA or the mirror check): the symphysis' axis or the head's border
            near the tangent moves when the frame is mirrored.
        aop_border_sensitivity_deg: how far the angle of progression moves when the head's fitted border grows or
            shrinks by one pixel (intrapartum frames, :func:`~FetalHeadSegLib.measure.aop.border_sensitivity_deg`):
            the same one- or two-pixel segmentation error turns the tangent from the apex most when the head lies
            close to the apex.
        hc_mm: the measured HC (plausibility).
    """

    uncertain_band: float | None = None
    uncertain_band_mm: float | None = None
    fit_residual: float | None = None
    border_contact: float | None = None
    field_fill: float | None = None
    cascade_dice: float | None = None
    tta_disagreement: float | None = None
    hc_flip_spread_mm: float | None = None
    aop_flip_spread_deg: float | None = None
    aop_border_sensitivity_deg: float | None = None
    hc_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: None if value is None else round(float(value), 4) for key, value in asdict(self).items()}


class Check(NamedTuple):
    """One rule: a signal, the policy threshold it is compared with, the side that recommends review, the
    reason it gives, and whether :func:`calibrate` tunes the threshold."""

    signal: str
    limit: str
    side: str
    reason: str
    calibrated: bool = True

    def fires(self, signals: ReviewSignals, policy: ReviewPolicy) -> bool:
        return _beyond(getattr(signals, self.signal), getattr(policy, self.limit), self.side)


def _beyond(value: float | None, limit: float | None, side: str) -> bool:
    """Whether a value lies beyond a limit on the given side (never when either is missing)."""
    return value is not None and limit is not None and (value > limit if side == ">" else value < limit)


CHECKS = (
    Check("uncertain_band", "max_uncertain_band", ">", "uncertain_border"),
    Check("uncertain_band_mm", "max_uncertain_band_mm", ">", "uncertain_border_wide_in_mm"),
    Check("fit_residual", "max_fit_residual", ">", "irregular_border"),
    Check("border_contact", "max_border_contact", ">", "cut_by_field_of_view"),
    Check("field_fill", "min_field_fill", "<", "head_too_small_for_field_of_view"),
    Check("field_fill", "max_field_fill", ">", "head_too_large_for_field_of_view", calibrated=False),
    Check("cascade_dice", "min_cascade_dice", "<", "cascade_levels_disagree"),
    Check("tta_disagreement", "max_tta_disagreement", ">", "flipped_predictions_disagree"),
    Check("hc_flip_spread_mm", "max_hc_flip_spread_mm", ">", "flipped_sizes_disagree"),
    Check("aop_flip_spread_deg", "max_aop_flip_spread_deg", ">", "flipped_angles_disagree"),
    Check("aop_border_sensitivity_deg", "max_aop_border_sensitivity_deg", ">", "angle_sensitive_to_head_border"),
)
"""Every threshold rule of a :class:`ReviewPolicy` (the HC plausibility range is checked apart)."""
IMPLAUSIBLE_SIZE = "implausible_size"
NO_HEAD_MEASURED = "no_head_measured"
REASONS = (*(check.reason for check in CHECKS), IMPLAUSIBLE_SIZE, NO_HEAD_MEASURED)
"""Every reason a review can give (README's table says what each means and what to look at)."""


@dataclass(frozen=True)
class ReviewPolicy:
    """Thresholds beyond which a signal recommends review (None: the signal is not used)."""

    max_uncertain_band: float | None = 0.08
    max_uncertain_band_mm: float | None = None
    """Off until calibrated: the width that matters depends on the measurement's tolerance."""
    max_fit_residual: float | None = 0.03
    max_border_contact: float | None = 0.05
    min_field_fill: float | None = 0.1
    max_field_fill: float | None = None
    min_cascade_dice: float | None = 0.8
    max_tta_disagreement: float | None = 0.1
    max_hc_flip_spread_mm: float | None = 5.0
    """Uncalibrated: flipped predictions whose HCs lie further apart than an HC error that makes a measurement bad
    (5 mm, the HC18 criterion)."""
    max_aop_flip_spread_deg: float | None = 15.0
    max_aop_border_sensitivity_deg: float | None = None
    """Off until calibrated: degrees per pixel depend on the frames' resolution."""
    plausible_hc_mm: tuple[float, float] | None = PLAUSIBLE_HC_MM
    """HC range a fetus can have; None turns the rule off (a data set whose pixel size is not physical)."""
    calibration: dict[str, Any] | None = None
    """How the thresholds were chosen and what they achieved (data, flag rate, recall, precision)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ReviewPolicy:
        if not data:
            return cls()
        known = {field.name for field in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if values.get("calibration") is not None:  # a rule added after the calibration stays off, not at its default
            values = {**{rule.limit: None for rule in RULES}, **values}
        if values.get("plausible_hc_mm") is not None:
            low, high = values["plausible_hc_mm"]
            values["plausible_hc_mm"] = (float(low), float(high))
        return cls(**values)

    def reasons(self, signals: ReviewSignals) -> list[str]:
        """Why this result should be reviewed (empty: no reason)."""
        reasons = [check.reason for check in CHECKS if check.fires(signals, self)]
        if self.plausible_hc_mm is not None and signals.hc_mm is not None:
            low, high = self.plausible_hc_mm
            if not low <= signals.hc_mm <= high:
                reasons.append(IMPLAUSIBLE_SIZE)
        return reasons


@dataclass(frozen=True)
class Review:
    """The decision with its reasons and the signals behind it."""

    recommended: bool
    reasons: list[str]
    signals: ReviewSignals

    def to_dict(self) -> dict[str, Any]:
        return {
            "review_recommended": self.recommended,
            "review_reasons": self.reasons,
            "review_signals": self.signals.to_dict(),
        }


def no_head_review() -> Review:
    """Nothing was found or measured: always review."""
    return Review(True, [NO_HEAD_MEASURED], ReviewSignals())


def review_signals(
    head_probability: np.ndarray,
    head: np.ndarray,
    spacing_mm: tuple[float, float, float],
    is_2d: bool,
    mean_semi_axis_mm: float | None = None,
    fit_residual_mm: float | None = None,
    hc_mm: float | None = None,
    cascade_dice: float | None = None,
    tta_disagreement: float | None = None,
    hc_flip_spread_mm: float | None = None,
    aop_flip_spread_deg: float | None = None,
    aop_border_sensitivity_deg: float | None = None,
) -> ReviewSignals:
    """The signals of one result: ``head_probability`` and the boolean ``head`` on the input's (X, Y, Z) grid."""
    from scipy import ndimage

    axes = 2 if is_2d else 3
    plane = head[:, :, 0] if is_2d else head
    probability = head_probability[:, :, 0] if is_2d else head_probability
    border = plane & ~ndimage.binary_erosion(plane)
    border_count = int(border.sum())
    if border_count == 0:
        return ReviewSignals(
            hc_mm=hc_mm,
            cascade_dice=cascade_dice,
            tta_disagreement=tta_disagreement,
            hc_flip_spread_mm=hc_flip_spread_mm,
            aop_flip_spread_deg=aop_flip_spread_deg,
            aop_border_sensitivity_deg=aop_border_sensitivity_deg,
        )
    low, high = UNCERTAIN_PROBABILITY
    uncertain = int(((probability > low) & (probability < high)).sum())
    step_mm = float(np.mean(spacing_mm[:axes]))
    band_mm = uncertain / border_count * step_mm
    radius = mean_semi_axis_mm or step_mm * math.sqrt(int(plane.sum()) / math.pi)
    edges = np.zeros_like(plane)
    for axis in range(axes):
        index: list[Any] = [slice(None)] * axes
        index[axis] = 0
        edges[tuple(index)] = True
        index[axis] = -1
        edges[tuple(index)] = True
    extents = []
    found = np.nonzero(plane)
    for axis in range(axes):
        extents.append((found[axis].max() - found[axis].min() + 1) / plane.shape[axis])
    return ReviewSignals(
        uncertain_band=band_mm / radius,
        uncertain_band_mm=band_mm,
        fit_residual=None if fit_residual_mm is None or not mean_semi_axis_mm else fit_residual_mm / mean_semi_axis_mm,
        border_contact=int((border & edges).sum()) / border_count,
        field_fill=float(max(extents)),
        cascade_dice=cascade_dice,
        tta_disagreement=tta_disagreement,
        hc_flip_spread_mm=hc_flip_spread_mm,
        aop_flip_spread_deg=aop_flip_spread_deg,
        aop_border_sensitivity_deg=aop_border_sensitivity_deg,
        hc_mm=hc_mm,
    )


def decide(signals: ReviewSignals, policy: ReviewPolicy) -> Review:
    """Apply a policy to the signals."""
    reasons = policy.reasons(signals)
    return Review(bool(reasons), reasons, signals)


RULES = tuple(check for check in CHECKS if check.calibrated)
"""The rules whose thresholds :func:`calibrate` may tune."""


def review_rates(policy: ReviewPolicy, cases: list[tuple[ReviewSignals, bool]]) -> dict[str, float | int]:
    """Flag rate, recall and precision of a policy on (signals, bad) cases (see :func:`decision_rates`)."""
    return decision_rates([bool(policy.reasons(signals)) for signals, _ in cases], [bad for _, bad in cases])


def decision_rates(flagged: list[bool], bad: list[bool]) -> dict[str, float | int]:
    """Flag rate, recall (bad cases flagged), precision (flagged cases that are bad) and the share of good cases
    flagged (false alarms) of review decisions already made."""
    caught = sum(f and b for f, b in zip(flagged, bad, strict=True))
    good = len(bad) - sum(bad)
    return {
        "cases": len(bad),
        "bad_cases": sum(bad),
        "flagged": sum(flagged),
        "flag_rate": round(sum(flagged) / max(len(bad), 1), 4),
        "recall": round(caught / sum(bad), 4) if sum(bad) else float("nan"),
        "precision": round(caught / sum(flagged), 4) if sum(flagged) else float("nan"),
        "good_flagged": round((sum(flagged) - caught) / good, 4) if good else float("nan"),
    }


BUDGETS = ("all", "good")
"""What a calibration's flag budget counts: every case, or only the good ones (false alarms)."""


def calibrate(
    cases: list[tuple[ReviewSignals, bool]], max_flag_rate: float = 0.15, budget_of: str = "all"
) -> ReviewPolicy:
    """Thresholds that flag as many bad cases as possible while flagging at most ``max_flag_rate`` of all cases
    (``budget_of="all"``) or of the good cases only (``"good"``: at most that share of false alarms, for a model
    that is wrong too often for an overall budget to catch its failures, as on hard 3D stress sets).

    Greedy: start with every signal off; repeatedly tighten the one threshold whose next step catches the most
    bad cases per newly flagged (counted) case, while the flag budget allows; stop when no step catches another
    bad case. Each threshold lies halfway between the last flagged value and the next one, so a case at the edge
    of the validation data is not flagged by accident. The plausibility rule (HC range) stays on, and its flags
    count against the budget, unless it alone breaks the budget (the data's pixel size is then not physical, as
    in PSFHS frames): it is turned off.
    """
    if budget_of not in BUDGETS:
        raise ValueError(f"budget_of must be one of {BUDGETS}, got {budget_of!r}")
    counted = [budget_of == "all" or not bad for _, bad in cases]
    budget = int(math.floor(max_flag_rate * sum(counted)))

    def cost(flags: list[bool]) -> int:
        return sum(f and c for f, c in zip(flags, counted, strict=True))

    limits: dict[str, Any] = {rule.limit: None for rule in RULES}
    flagged = [bool(ReviewPolicy(**limits).reasons(signals)) for signals, _ in cases]
    if cost(flagged) > budget:
        limits["plausible_hc_mm"] = None
        flagged = [False] * len(cases)
    while True:
        best: tuple[tuple[float, int], str, float, list[bool]] | None = None
        for rule in RULES:
            values = sorted(
                {v for s, _ in cases if (v := getattr(s, rule.signal)) is not None}, reverse=rule.side == ">"
            )
            for index, value in enumerate(values[:-1]):
                limit = 0.5 * (value + values[index + 1])
                trial = [
                    f or _beyond(getattr(s, rule.signal), limit, rule.side)
                    for f, (s, _) in zip(flagged, cases, strict=True)
                ]
                added = cost(trial) - cost(flagged)
                if sum(trial) == sum(flagged) or cost(trial) > budget:
                    continue
                gained = sum(t and not f and bad for t, f, (_, bad) in zip(trial, flagged, cases, strict=True))
                score = (gained / added if added else math.inf, gained)
                if gained and (best is None or score > best[0]):
                    best = (score, rule.limit, limit, trial)
        if best is None:
            break
        _, field, limit, flagged = best
        limits[field] = round(limit, 6)
    rates = review_rates(ReviewPolicy(**limits), cases)
    return ReviewPolicy(**limits, calibration={"max_flag_rate": max_flag_rate, "budget_of": budget_of, **rates})


def cross_validated_rates(
    cases: list[tuple[ReviewSignals, bool]],
    max_flag_rate: float = 0.15,
    budget_of: str = "all",
    folds: int = 5,
    seed: int = 0,
) -> dict[str, float | int]:
    """How a calibration does on cases it did not see: the cases are split into ``folds`` parts (bad and good
    ones spread evenly, drawn with ``seed``); each part is decided by thresholds calibrated on the others, and the
    pooled decisions are counted as :func:`decision_rates` does. Thresholds chosen and scored on the same cases
    flatter themselves; these numbers do not.
    """
    rng = np.random.default_rng(seed)
    fold_of = [0] * len(cases)
    for wanted in (True, False):
        members = [i for i, (_, bad) in enumerate(cases) if bad is wanted]
        for position, index in enumerate(rng.permutation(members)):
            fold_of[int(index)] = position % folds
    flagged = [False] * len(cases)
    for fold in range(folds):
        held_out = [i for i in range(len(cases)) if fold_of[i] == fold]
        policy = calibrate([cases[i] for i in range(len(cases)) if fold_of[i] != fold], max_flag_rate, budget_of)
        for i in held_out:
            flagged[i] = bool(policy.reasons(cases[i][0]))
    return {"folds": folds, **decision_rates(flagged, [bad for _, bad in cases])}
