"""``training.evaluate --phantoms N``: N new 3D phantoms (seeds never used in training; grid sizes, head sizes
relative to the field of view and elevation anisotropy over wider ranges than the training configs use), scored
against their exact truth: Dice, HD95 and ASSD against the head mask; HC, BPD, OFD and volume errors against the
analytic measurements. ``--appearance stress`` draws the stress suite's rows in turn
(``FetalHeadSegLib.phantom.stress``) with these seeds instead; a comma-separated list (``classic,randomised,stress``)
alternates case by case."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from FetalHeadSegLib.inference.engine import InferenceOptions, Segmenter
from FetalHeadSegLib.measure.metrics import segmentation_metrics
from training.case_records import DICE_BAD_3D, CaseRows, ReviewCases, add_review_case, case_row, summarise

if TYPE_CHECKING:
    from FetalHeadSegLib.phantom import PhantomConfig

PHANTOM_GRIDS = ((96, 96, 96), (128, 96, 112), (112, 80, 96), (144, 112, 128))
PHANTOM_HEAD_FILL = (0.3, 1.0)
"""Fraction of the lateral field of view the head fills (training used 0.35-0.9; near 1 it is cut)."""
PHANTOM_ELEVATION_RATIO = (1.0, 1.8)
"""Elevation voxel size over in-plane voxel size (training used 1-1.5)."""
APPEARANCES = ("classic", "randomised", "stress")
"""Phantom kinds of ``--appearance``; ``mixed`` stands for ``classic,randomised``."""


def appearance_cycle(appearance: str) -> tuple[str, ...]:
    """The phantom kinds ``--appearance`` names, in the order the cases take them.

    Example:
        >>> appearance_cycle("mixed"), appearance_cycle("classic,stress")
        (('classic', 'randomised'), ('classic', 'stress'))
    """
    kinds = ("classic", "randomised") if appearance == "mixed" else tuple(appearance.split(","))
    unknown = [kind for kind in kinds if kind not in APPEARANCES]
    if unknown or not kinds:
        raise ValueError(f"unknown phantom appearance {','.join(unknown)!r}; choose from {', '.join(APPEARANCES)}")
    return kinds


def head_cut_by_field_of_view(truth: dict[str, Any]) -> bool:
    """Whether a phantom's head is cut: by its field of view (fan, cone, crop or the grid's border) where the phantom
    records one, else by the grid's border."""
    return bool(truth.get("head_cut_by_field_of_view", truth["head_touches_border"]))


def phantom_case(kinds: tuple[str, ...], index: int) -> tuple[str, PhantomConfig]:
    """Case ``index`` of an evaluation cycling through ``kinds`` (:func:`appearance_cycle`): its kind (a stress case
    names its row, the rows taken in turn) and its phantom config."""
    from FetalHeadSegLib.phantom import PhantomConfig
    from FetalHeadSegLib.phantom.stress import STRESS_ROWS, stress_config

    kind = kinds[index % len(kinds)]
    if kind == "stress":
        row = STRESS_ROWS[(index // len(kinds)) % len(STRESS_ROWS)]
        return f"stress:{row.name}", stress_config(row)
    config = PhantomConfig(
        dimension=3,
        size=PHANTOM_GRIDS[index % len(PHANTOM_GRIDS)],
        head_fill_range=PHANTOM_HEAD_FILL,
        elevation_ratio_range=PHANTOM_ELEVATION_RATIO,
        appearance=kind,
    )
    return kind, config


def evaluate_phantoms(
    segmenter: Segmenter,
    count: int,
    first_seed: int,
    review_cases: ReviewCases | None = None,
    options: InferenceOptions | None = None,
    appearance: str = "classic",
    rows: CaseRows | None = None,
) -> dict[str, Any]:
    from FetalHeadSegLib.phantom import generate_phantom
    from FetalHeadSegLib.phantom.generator import relative_errors

    results: dict[str, list[float]] = {
        k: []
        for k in (
            "dice",
            "hd95_mm",
            "assd_mm",
            "hc_rel_error",
            "bpd_rel_error",
            "ofd_rel_error",
            "volume_rel_error",
            "seconds",
        )
    }
    cut_by_field_of_view = 0
    kinds = appearance_cycle(appearance)
    for index in range(count):
        kind, config = phantom_case(kinds, index)
        case = generate_phantom(config, first_seed + index)
        cut = head_cut_by_field_of_view(case.truth)
        cut_by_field_of_view += cut
        start = time.perf_counter()
        result = segmenter.segment(case.image, options, source=f"phantom {first_seed + index}")
        results["seconds"].append(time.perf_counter() - start)
        head = result.labels.array == segmenter.bundle.head_label
        metrics = segmentation_metrics(head, case.head_mask.array > 0, case.image.spacing_mm)
        results["dice"].append(metrics.dice)
        if review_cases is not None:
            add_review_case(result, metrics.dice < DICE_BAD_3D, review_cases)
        results["hd95_mm"].append(metrics.hd95_mm)
        results["assd_mm"].append(metrics.assd_mm)
        errors = {f"{name}_rel_error": error for name, error in relative_errors(result.biometry, case.truth).items()}
        for key, error in errors.items():
            results[key].append(error)
        if rows is not None:
            rows.append(
                case_row(
                    f"phantom {first_seed + index}",
                    result,
                    appearance=kind,
                    head_cut_by_field_of_view=cut,
                    dice=metrics.dice,
                    hd95_mm=metrics.hd95_mm,
                    **errors,
                )
            )
    return {
        "data": f"{count} new 3D phantoms ({appearance} appearance, seeds {first_seed}-{first_seed + count - 1}, "
        "GA 14-40 weeks, grids "
        f"{list(PHANTOM_GRIDS)}, head filling {PHANTOM_HEAD_FILL[0]:.0%}-{PHANTOM_HEAD_FILL[1]:.0%} of the lateral "
        f"field of view, elevation voxels {PHANTOM_ELEVATION_RATIO[0]}-{PHANTOM_ELEVATION_RATIO[1]} times the "
        "in-plane size" + ("; stress cases: the stress suite's rows in turn at 96^3)" if "stress" in kinds else ")"),
        "cases": count,
        "heads_cut_by_field_of_view": cut_by_field_of_view,
        **{k: summarise(v) for k, v in results.items() if k != "seconds"},
        "cpu_seconds_per_case": summarise(results["seconds"]),
    }
