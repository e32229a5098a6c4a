"""What a run concludes from the networks' class probabilities (the engine's stages 3 and 4): the label map, the
measurements, how far the flipped passes' measurements lie apart, and whether a person should review the result."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.core.tasks import task_spec
from FetalHeadSegLib.inference.postprocessing import clean_label_map, decide_labels, detach_attached_tissue
from FetalHeadSegLib.inference.roi_cascade import CascadeOutput
from FetalHeadSegLib.measure.quality import Flag
from FetalHeadSegLib.models.bundle import ModelBundle

if TYPE_CHECKING:
    from FetalHeadSegLib.measure.biometry import Biometry
    from FetalHeadSegLib.measure.review import Review

TTA_DISAGREEMENT_LIMIT = 0.05
"""Flag a result when flipped predictions disagree on more than this share of the predicted head, unless the model's
review thresholds for runs with flips set a calibrated limit of their own (:func:`tta_disagreement_limit`)."""


def disagreeing_share(votes: np.ndarray) -> float:
    """Share of the head (the union of the passes' heads) on which the flipped passes do not all agree."""
    union, intersection = votes.any(axis=0), votes.all(axis=0)
    return float((union & ~intersection).sum()) / max(int(union.sum()), 1)


def tta_disagreement_limit(bundle: ModelBundle) -> float:
    """The share of disagreeing head beyond which a result made with flips is flagged: the model's calibrated
    ``max_tta_disagreement`` for such runs where its calibration chose one, so that the flag fires exactly when the
    review's own rule does (a disagreement the model shows on its good results is no warning), otherwise
    :data:`TTA_DISAGREEMENT_LIMIT`."""
    policy = bundle.review_policy(tta=True)
    if policy.calibration is not None and policy.max_tta_disagreement is not None:
        return policy.max_tta_disagreement
    return TTA_DISAGREEMENT_LIMIT


def tta_flags(share: float, limit: float = TTA_DISAGREEMENT_LIMIT) -> list[Flag]:
    """A quality flag when the flipped passes disagree on more than ``limit`` of the head."""
    if share > limit:
        return [
            Flag(
                "tta_disagreement_high",
                f"flipped predictions disagree on {100 * share:.1f} % of the head: "
                "the segmentation is uncertain, check it",
            )
        ]
    return []


def label_map(
    bundle: ModelBundle, class_probabilities: np.ndarray, spacing_mm: tuple[float, float, float]
) -> np.ndarray:
    """The label map of (K, X, Y, Z) probabilities: each voxel's label (argmax, or the model's own head threshold),
    for each label the component holding the most of its probability with its holes filled, then the model's own
    postprocessing (tissue stuck to the head cut away)."""
    labels = clean_label_map(
        decide_labels(class_probabilities, bundle.head_label, bundle.postprocessing.head_threshold),
        [label.value for label in bundle.labels],
        class_probabilities,
    )
    if bundle.postprocessing.detach_fraction is not None:
        head = labels == bundle.head_label
        detached = detach_attached_tissue(head, spacing_mm, bundle.postprocessing.detach_fraction)
        labels[head & ~detached] = 0
    return labels


class FlipSpreads(NamedTuple):
    """How far the measurements of each flipped pass (TTA or the mirror check), measured alone, lie apart (None: not
    measured)."""

    hc_mm: float | None = None
    """Largest difference between the HCs of the passes (2D frames)."""
    aop_deg: float | None = None
    """Largest difference between the angles of progression of the passes (intrapartum frames)."""


def flip_spreads(
    bundle: ModelBundle, image: Image, output: CascadeOutput, first_pass: Biometry | None = None
) -> FlipSpreads:
    """Measure each flipped pass's label map alone and report the spread of its HC and angle of progression (none
    without flipped passes, for 3D volumes whose passes are not kept, or where fewer than two can be measured). A
    border that moves when the frame is mirrored (a faint skull, a symphysis axis or a head border near the
    tangent) gives a wide spread. ``first_pass``: the biometry of the unflipped pass when it is already measured
    (the result of a run without TTA); that pass is then not measured again."""
    from itertools import islice

    from FetalHeadSegLib.core.errors import FetalHeadSegError

    if output.pass_probabilities is None:
        return FlipSpreads()
    spec = task_spec(bundle.task)
    measured = [] if first_pass is None else [first_pass]
    for probabilities in islice(output.pass_probabilities(), len(measured), None):
        labels = image.with_array(label_map(bundle, probabilities, image.spacing_mm))
        if not np.any(labels.array == spec.head_label):
            continue
        try:
            measured.append(spec.measure(labels, None))
        except FetalHeadSegError:
            continue
    circumferences = [biometry.hc_mm for biometry in measured]
    angles = [biometry.aop.aop_deg for biometry in measured if biometry.aop is not None]

    def spread(values: list[float]) -> float | None:
        return max(values) - min(values) if len(values) > 1 else None

    return FlipSpreads(spread(circumferences), spread(angles))


def review_probability(output: CascadeOutput, head_label: int, tta: bool) -> np.ndarray:
    """The head probability the review reads its uncertain border from: the result's, or without TTA, where the
    mirror check ran, the mean of the frame's and its mirror's passes, as TTA averages them. The border's width
    then holds how far the two passes' borders lie apart, as with TTA, while the result stays the unflipped
    pass."""
    if tta or output.pass_probabilities is None:
        return output.class_probabilities[head_label]
    return np.mean([probabilities[head_label] for probabilities in output.pass_probabilities()], axis=0)


def review_result(
    bundle: ModelBundle,
    image: Image,
    head_probability: np.ndarray,
    head: np.ndarray,
    biometry: Biometry | None,
    output: CascadeOutput,
    tta_share: float | None,
    spreads: FlipSpreads,
    tta: bool = False,
) -> Review:
    """Whether a person should look at this result, by the bundle's policy calibrated for results made with
    (``tta``) or without flip test-time augmentation."""
    from FetalHeadSegLib.measure.review import decide, no_head_review, review_signals

    if not head.any():
        return no_head_review()
    ellipse = biometry.ellipse if biometry is not None else None
    signals = review_signals(
        head_probability,
        head,
        image.spacing_mm,
        image.is_2d,
        mean_semi_axis_mm=None if ellipse is None else 0.5 * (ellipse.semi_major + ellipse.semi_minor),
        fit_residual_mm=None if ellipse is None else ellipse.residual_rms,
        hc_mm=None if biometry is None else biometry.hc_mm,
        cascade_dice=output.cascade_dice,
        tta_disagreement=tta_share,
        hc_flip_spread_mm=spreads.hc_mm,
        aop_flip_spread_deg=spreads.aop_deg,
        aop_border_sensitivity_deg=None
        if biometry is None or biometry.aop is None
        else biometry.aop.border_sensitivity_deg,
    )
    return decide(signals, bundle.review_policy(tta))


def measure_labels(bundle: ModelBundle, labels: Image, ga_weeks: float | None, flags: list[Flag]) -> Biometry | None:
    """Biometry of the predicted head (and AoP for intrapartum models); None with a flag if nothing to measure."""
    from FetalHeadSegLib.core.errors import FetalHeadSegError

    spec = task_spec(bundle.task)
    if not np.any(labels.array == spec.head_label):
        flags.append(Flag("no_head_found", "the model found no head in this image: nothing was measured"))
        return None
    try:
        biometry = spec.measure(labels, ga_weeks)
    except FetalHeadSegError as err:
        flags.append(Flag("biometry_failed", f"the head could not be measured: {err}"))
        return None
    return biometry.with_flags(flags)
