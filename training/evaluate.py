"""``python -m training.evaluate BUNDLE ...``: measure a model bundle through the inference engine on held-out
data, print the numbers, and optionally write them into the bundle's model card and ``MODEL_CARD.md``.

- ``--hc18 ROOT --run RUN_DIR``: the run's validation subjects, original PNGs at their pixel size (``--run`` also
  takes the training config instead of its run folder: the split is recomputed as training makes it). HC18
  conventions (``biometry.md`` §5.5): DF and ADF of HC against the CSV; Dice and Hausdorff distance of the
  rasterised predicted ellipse against the rasterised reference ellipse. Each row also says how far the skull's
  outer edge lies from either ellipse (``training.skull_edge``).
- ``--psfhs ROOT --run RUN_DIR``: the run's validation frames: Dice per structure and the angle-of-progression
  error against AoP measured on the expert masks.
- ``--phantoms N``: N new 3D phantoms against their exact truth (``training.phantom_evaluation``).

Each evaluation keeps a row per case (``--cases-csv``) and the review signals of each result with whether it was
bad (``training.case_records``), from which ``--calibrate-review`` chooses the model's review thresholds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from FetalHeadSegLib.core.errors import FetalHeadSegError
from FetalHeadSegLib.core.io import read_image
from FetalHeadSegLib.inference.engine import InferenceOptions, Segmenter, load_model
from FetalHeadSegLib.measure.metrics import segmentation_metrics
from FetalHeadSegLib.measure.review import BUDGETS
from FetalHeadSegLib.models.card import write_card, write_review_policy
from training.case_records import (
    AOP_ERROR_BAD_DEG,
    DICE_BAD_3D,
    HC_ERROR_BAD_MM,
    CaseRows,
    ReviewCases,
    add_review_case,
    case_row,
    summarise,
    write_rows,
)
from training.phantom_evaluation import appearance_cycle, evaluate_phantoms


def evaluate_hc18(
    segmenter: Segmenter,
    root: Path,
    case_ids: list[str],
    review_cases: ReviewCases | None = None,
    rows: CaseRows | None = None,
    options: InferenceOptions | None = None,
) -> dict[str, Any]:
    from FetalHeadSegLib.measure.hc18 import ellipse_from_outline, rasterize_ellipse, read_pixel_size_csv
    from training.skull_edge import outer_edge_offset_mm

    table = read_pixel_size_csv(root / "subset_pixel_size_and_HC.csv")
    df, dice, hd, seconds, reference_hc = [], [], [], [], []
    for case_id in case_ids:
        row = table[f"{case_id}.png"]
        image = read_image(root / "training_set" / f"{case_id}.png", spacing_mm=row.pixel_size_mm)
        start = time.perf_counter()
        result = segmenter.segment(image, options, source=case_id)
        seconds.append(time.perf_counter() - start)
        outline = read_image(root / "training_set" / f"{case_id}_Annotation.png")
        reference_ellipse_px = ellipse_from_outline(outline.array[:, :, 0])
        reference = rasterize_ellipse(reference_ellipse_px, outline.shape[:2])
        assert row.hc_mm is not None
        reference_hc.append(row.hc_mm)
        if result.biometry is None:
            df.append(float("nan"))
            dice.append(0.0)
            if rows is not None:
                rows.append(case_row(case_id, result, reference_hc_mm=row.hc_mm, pixel_size_mm=row.pixel_size_mm))
            if review_cases is not None:
                add_review_case(result, True, review_cases)
            continue
        predicted = rasterize_ellipse(result.biometry.ellipse.scaled(1.0 / row.pixel_size_mm), outline.shape[:2])
        df.append(result.biometry.hc_mm - row.hc_mm)
        if review_cases is not None:
            add_review_case(result, abs(df[-1]) > HC_ERROR_BAD_MM, review_cases)
        metrics = segmentation_metrics(predicted, reference, (row.pixel_size_mm, row.pixel_size_mm))
        dice.append(metrics.dice)
        hd.append(metrics.hd_mm)
        if rows is not None:
            rows.append(
                case_row(
                    case_id,
                    result,
                    reference_hc_mm=row.hc_mm,
                    hc_mm=result.biometry.hc_mm,
                    df_mm=df[-1],
                    dice_ellipse=metrics.dice,
                    pixel_size_mm=row.pixel_size_mm,
                    reference_to_skull_edge_mm=outer_edge_offset_mm(
                        image.array[:, :, 0], reference_ellipse_px.scaled(row.pixel_size_mm), row.pixel_size_mm
                    ),
                    prediction_to_skull_edge_mm=outer_edge_offset_mm(
                        image.array[:, :, 0], result.biometry.ellipse, row.pixel_size_mm
                    ),
                )
            )
    return {
        "data": "HC18 validation subjects",
        "cases": len(case_ids),
        "df_mm": summarise(df),
        "adf_mm": summarise([abs(v) for v in df]),
        "adf_mm_by_reference_hc": {
            name: summarise([abs(v) for v, hc in zip(df, reference_hc, strict=True) if low <= hc < high])
            for name, low, high in (
                ("under_100_mm", 0, 100),
                ("100_to_200_mm", 100, 200),
                ("200_mm_and_over", 200, 1e9),
            )
        },
        "dice_ellipse": summarise(dice),
        "hd_mm": summarise(hd),
        "failed": sum(1 for v in df if not math.isfinite(v)),
        "cpu_seconds_per_case": summarise(seconds),
    }


def evaluate_psfhs(
    segmenter: Segmenter,
    root: Path,
    case_ids: list[str],
    review_cases: ReviewCases | None = None,
    rows: CaseRows | None = None,
    options: InferenceOptions | None = None,
) -> dict[str, Any]:
    from FetalHeadSegLib.measure.aop import angle_of_progression

    dice_ps, dice_fh, aop_error, seconds = [], [], [], []
    for case_id in case_ids:
        image = read_image(root / "image_mha" / f"{case_id}.mha")
        truth = read_image(root / "label_mha" / f"{case_id}.mha")
        start = time.perf_counter()
        result = segmenter.segment(image, options, source=case_id)
        seconds.append(time.perf_counter() - start)
        predicted = result.labels.array[:, :, 0]
        dice_ps.append(segmentation_metrics(predicted == 1, truth.array[:, :, 0] == 1).dice)
        dice_fh.append(segmentation_metrics(predicted == 2, truth.array[:, :, 0] == 2).dice)
        reference_aop = angle_of_progression(truth).aop_deg
        try:
            measured_aop = angle_of_progression(result.labels).aop_deg
        except FetalHeadSegError:
            measured_aop = float("nan")
        aop_error.append(abs(measured_aop - reference_aop))
        if rows is not None:
            rows.append(
                case_row(
                    case_id,
                    result,
                    reference_aop_deg=reference_aop,
                    aop_deg=measured_aop,
                    dice_fetal_head=dice_fh[-1],
                    dice_pubic_symphysis=dice_ps[-1],
                )
            )
        if review_cases is not None:
            bad = not (math.isfinite(aop_error[-1]) and aop_error[-1] <= AOP_ERROR_BAD_DEG)
            add_review_case(result, bad, review_cases)
    return {
        "data": "PSFHS validation frames",
        "cases": len(case_ids),
        "dice_pubic_symphysis": summarise(dice_ps),
        "dice_fetal_head": summarise(dice_fh),
        "aop_abs_error_deg": summarise(aop_error),
        "aop_failed": sum(1 for v in aop_error if not math.isfinite(v)),
        "cpu_seconds_per_case": summarise(seconds),
    }


def _review_summary(
    args: argparse.Namespace, segmenter: Segmenter, cases: ReviewCases, command: str, tta: bool
) -> dict[str, Any]:
    """The review flag's rates on these cases, by the bundle's thresholds for runs with or without flips (``tta``) as
    this one; with --calibrate-review, new thresholds for such runs written into the bundle, whose rates are then
    the bundle's (``policy_in_bundle``; the former thresholds' under ``policy_before_calibration``)."""
    from FetalHeadSegLib.measure.review import calibrate, cross_validated_rates, review_rates

    bad = (
        f"|HC error| > {HC_ERROR_BAD_MM} mm"
        if args.hc18
        else f"|AoP error| > {AOP_ERROR_BAD_DEG} deg"
        if args.psfhs
        else f"Dice < {DICE_BAD_3D}"
    )
    in_bundle = segmenter.bundle.review_policy(tta)
    summary: dict[str, Any] = {"bad_means": bad, "policy_in_bundle": review_rates(in_bundle, cases)}
    if args.calibrate_review is not None:
        policy = calibrate(cases, args.calibrate_review, args.review_budget)
        assert policy.calibration is not None
        policy.calibration["data"] = "the cases of this evaluation (numbers on the same cases are optimistic)"
        policy.calibration["bad_means"] = bad
        policy.calibration["cross_validated"] = cross_validated_rates(cases, args.calibrate_review, args.review_budget)
        policy.calibration["tta"] = tta
        policy.calibration["command"] = command
        write_review_policy(segmenter.bundle.path, policy.to_dict(), tta=tta)
        summary["policy_before_calibration"] = summary["policy_in_bundle"]
        summary["policy_in_bundle"] = review_rates(policy, cases)
        summary["calibrated"] = policy.to_dict()
    return summary


def validation_case_ids(run: Path, data_root: Path) -> list[str]:
    """The validation case ids of a training run folder (``splits.json``) or of a training config's data block
    (its files listed under ``data_root``, the folder the evaluation reads).

    Raises:
        FetalHeadSegError: neither exists, or the config is invalid.
    """
    if run.is_dir():
        splits = run / "splits.json"
        if not splits.exists():
            raise FetalHeadSegError(f"{run}: no splits.json in this run folder")
        return list(json.loads(splits.read_text())["validation"])
    if not run.is_file():
        raise FetalHeadSegError(f"{run}: no such run folder or training config")
    from dataclasses import replace

    from training.config import read_config
    from training.data import split_case_ids

    return split_case_ids(replace(read_config(run).data, root=str(data_root)))[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--hc18", type=Path, metavar="ROOT")
    data.add_argument("--psfhs", type=Path, metavar="ROOT")
    data.add_argument("--phantoms", type=int, metavar="N")
    parser.add_argument(
        "--run",
        type=Path,
        metavar="RUN_DIR|CONFIG",
        help="the validation cases: a training run folder (its splits.json), or a training config (its data "
        "block split as training splits it)",
    )
    parser.add_argument("--seed", type=int, default=900000, help="first phantom seed (default 900000)")
    parser.add_argument(
        "--appearance",
        default="classic",
        help="phantoms' appearance: classic, randomised, stress (the stress suite's rows in turn, with --seed's "
        "seeds), a comma-separated list of them taken case by case, or mixed (= classic,randomised)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--update-card", action="store_true", help="write the results into the bundle's card")
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="run with (--tta) or without (--no-tta) flip test-time augmentation; default: as the model recommends",
    )
    parser.add_argument("--cases-csv", type=Path, metavar="CSV", help="also write one row per case")
    parser.add_argument(
        "--calibrate-review",
        type=float,
        nargs="?",
        const=0.15,
        metavar="RATE",
        help="choose the review thresholds on these cases (flag at most RATE of them, default 0.15) and write "
        "them into bundle.json",
    )
    parser.add_argument(
        "--review-budget",
        choices=BUDGETS,
        default="all",
        help="what --calibrate-review's RATE counts: all cases (default), or the good ones only (false alarms; "
        "for a model that fails too often for an overall budget, as on hard 3D phantom sets)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        appearance_cycle(args.appearance)
    except ValueError as err:
        parser.error(str(err))
    review_cases: ReviewCases = []
    options = InferenceOptions(tta=args.tta)
    rows: CaseRows = []
    try:
        segmenter = load_model(args.bundle, args.device)
        if args.phantoms:
            evaluation = evaluate_phantoms(
                segmenter, args.phantoms, args.seed, review_cases, options, args.appearance, rows
            )
        else:
            if args.run is None:
                parser.error("--hc18 and --psfhs need --run (the validation split)")
            case_ids = validation_case_ids(args.run, args.hc18 or args.psfhs)
            evaluation = (
                evaluate_hc18(segmenter, args.hc18, case_ids, review_cases, rows, options)
                if args.hc18
                else evaluate_psfhs(segmenter, args.psfhs, case_ids, review_cases, rows, options)
            )
        if args.cases_csv:
            write_rows(args.cases_csv, rows)
    except FetalHeadSegError as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 2
    command = "python -m training.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
    evaluation["tta"] = segmenter.bundle.uses_tta(args.tta)
    evaluation["review"] = _review_summary(args, segmenter, review_cases, command, evaluation["tta"])
    evaluation["command"] = command
    print(json.dumps(evaluation, indent=2))
    if args.update_card:
        write_card(segmenter.bundle.path, evaluation)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
