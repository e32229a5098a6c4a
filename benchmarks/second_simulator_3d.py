"""Generalisation check of a 3D head model on the second phantom generator, ``FetalHeadSegLib.phantom.image_space``.

The training phantoms of the shipped releases came from the beam-space scanner model only
(``FetalHeadSegLib.phantom.scanner``: speckle formed along each beam of a fan, shadows cast along the beams,
ellipsoidal heads with sutures). A model that learnt that simulator rather than the head does well on its phantoms
and badly elsewhere. The image-space generator shares no simulation code with it: egg-shaped heads, a uterine cavity
around the head, every tissue's echo level drawn in dB, speckle made along the image axes, shadows straight along
one image axis, a cone or the whole box (its module docstring has the details).

The truth is the exact head mask. HC, BPD and OFD are compared with those ``measure_biometry`` takes from the truth
mask (the same method on both, so the errors are the segmentation's alone); the volume with the egg's analytic one.

Seeds: ``SEED_BASE + i`` with ``SEED_BASE = 9_500_000``, above every training seed (training configs keep theirs
below 9,000,000, and ``data.phantom.image_space_fraction`` draws image-space cases with the configs' own seeds)
and apart from the stress suite's 9,000,000-9,021,999.

Run:
    python benchmarks/second_simulator_3d.py --cases 24 --threads 2 --tta --json second.json
    python benchmarks/second_simulator_3d.py --model runs/my-run/export/my-model --cases 8
    python benchmarks/second_simulator_3d.py --save-cases runs/second   # also writes each image and truth
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from FetalHeadSegLib.phantom.image_space import ImageSpaceCase, generate_image_space

SEED_BASE = 9_500_000

DICE_BAD = 0.9
"""A 3D result with a lower Dice should be reviewed (issue #14's 3D rule)."""


def score(segmenter: Any, case: ImageSpaceCase, tta: bool) -> dict[str, Any]:
    """Segment one case and compare with its truth: Dice, HD95, HC/BPD/OFD errors against the same measurements
    taken on the truth mask, and the volume error against the egg's analytic volume."""
    from FetalHeadSegLib import measure_biometry

    from phantom_scoring import score_against_truth

    on_truth = measure_biometry(case.head_mask)
    truth = {
        "hc_mm": on_truth.hc_mm,
        "bpd_mm": on_truth.bpd_mm,
        "ofd_mm": on_truth.ofd_mm,
        "head_volume_ml": case.settings["head_volume_ml"],
    }
    scored, _, _ = score_against_truth(segmenter, case.image, case.head_mask.array != 0, truth, tta)
    return {**case.settings, **scored}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fetal-head-3d-cascade", help="model id or bundle folder")
    parser.add_argument("--cases", type=int, default=24, help="number of volumes (seeds SEED_BASE + 0, 1, ...)")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the networks")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write every case and the summary here")
    parser.add_argument("--save-cases", help="also write each case's image and truth (NIfTI) into this folder")
    parser.add_argument(
        "--update-card", action="store_true", help="record the summary in the model's card (a bundle folder you own)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from FetalHeadSegLib import load_model
    from FetalHeadSegLib.measure.review import decision_rates

    torch.set_num_threads(args.threads)
    segmenter = load_model(args.model, device=args.device)
    cases = []
    for index in range(args.cases):
        case = generate_image_space(SEED_BASE + index)
        if args.save_cases:
            from FetalHeadSegLib import write_image

            folder = Path(args.save_cases)
            folder.mkdir(parents=True, exist_ok=True)
            write_image(case.image, folder / f"case{index:03d}_image.nii.gz")
            write_image(case.head_mask, folder / f"case{index:03d}_label.nii.gz")
        record = score(segmenter, case, args.tta)
        cases.append(record)
        print(
            f"case {index}: Dice {record['dice']:.3f}, HC error {record['hc_error_pct']:.1f} %, "
            f"review {record['review_recommended']}",
            file=sys.stderr,
            flush=True,
        )
    dice = sorted(c["dice"] for c in cases)
    finite = [c for c in cases if math.isfinite(c["hc_error_pct"])]
    overall = {
        "cases": len(cases),
        "dice_mean": statistics.fmean(dice),
        "dice_median": statistics.median(dice),
        "dice_p10": dice[int(0.1 * (len(dice) - 1))],
        "dice_min": dice[0],
        "hc_error_median_pct": statistics.median(c["hc_error_pct"] for c in finite) if finite else math.nan,
        "volume_error_median_pct": statistics.median(c["volume_error_pct"] for c in finite) if finite else math.nan,
        "review": {
            "bad_means": f"Dice < {DICE_BAD}",
            **decision_rates([bool(c["review_recommended"]) for c in cases], [c["dice"] < DICE_BAD for c in cases]),
        },
    }
    model = f"{segmenter.bundle.id}@{segmenter.bundle.version}"
    print(
        f"{model} on {len(cases)} volumes of the second simulator{', flip TTA' if args.tta else ''}: "
        f"Dice mean {overall['dice_mean']:.3f}, median {overall['dice_median']:.3f}, "
        f"10th percentile {overall['dice_p10']:.3f}, min {overall['dice_min']:.3f}; HC error median "
        f"{overall['hc_error_median_pct']:.1f} %, volume {overall['volume_error_median_pct']:.1f} %; "
        f"review: {overall['review']['flagged']} flagged, {overall['review']['recall']:.0%} of "
        f"{overall['review']['bad_cases']} with Dice < {DICE_BAD} caught"
    )
    command = "python benchmarks/second_simulator_3d.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.update_card:
        from FetalHeadSegLib.models.card import write_card

        write_card(
            segmenter.bundle.path,
            {"command": command.replace(" --update-card", ""), "overall": overall},
            "second_simulator",
        )
    if args.json:
        report = {"model": model, "tta": args.tta, "seed_base": SEED_BASE, "command": command, "overall": overall}
        report["cases"] = cases
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
