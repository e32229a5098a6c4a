"""``fetalheadseg biometry``: measure the head in an existing segmentation."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from FetalHeadSegLib.core.errors import FetalHeadSegError, InputImageError, OutputError


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "biometry",
        help="measure HC, BPD, OFD, volume, GA (and AoP) from a head mask",
        description="Measure a fetal head from a segmentation (2D frame or 3D volume). Without --label every "
        "non-zero pixel is head. Prints a table; writes JSON and Slicer markups on request.",
    )
    parser.add_argument("mask", type=Path, help="head mask or label map (NIfTI, NRRD, MetaImage, PNG, ...)")
    parser.add_argument("--label", type=int, help="label value of the head (default: every non-zero value)")
    parser.add_argument(
        "--inner-label",
        type=int,
        metavar="N",
        help="label of the intracranial contents (inside the skull's inner edge): adds BPD "
        "outer-to-inner; these pixels count as head too",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        metavar="MM",
        help="pixel/voxel size in mm (1, 2 or 3 values); needed for PNG/JPEG masks",
    )
    parser.add_argument(
        "--spacing-source",
        choices=["header", "dicom_region", "command_line"],
        help="use this pixel size when the file's and --spacing disagree (otherwise an error)",
    )
    parser.add_argument(
        "--pixel-units",
        action="store_true",
        help="a mask without pixel size is measured in pixels (keys *_px) instead of refused",
    )
    parser.add_argument(
        "--ga-weeks",
        type=float,
        metavar="W",
        help="known gestational age in weeks: adds INTERGROWTH-21st z-scores and centiles",
    )
    parser.add_argument(
        "--intrapartum",
        action="store_true",
        help="PSFHS labels: 1 = pubic symphysis, 2 = fetal head; adds the angle of progression",
    )
    parser.add_argument(
        "--apex-side",
        choices=["right", "left", "top", "bottom"],
        default="right",
        help="image side the pubic symphysis' inferior apex points to, for --intrapartum (default: right, as in "
        "PSFHS frames: probe at the top, head below the symphysis)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write the measurements as JSON")
    parser.add_argument("--markups", type=Path, metavar="OUTDIR", help="write Slicer markups (.mrk.json) here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from FetalHeadSegLib.core.spacing import with_spacing_record
    from FetalHeadSegLib.core.tasks import Task, task_spec
    from FetalHeadSegLib.measure.aop import angle_of_progression
    from FetalHeadSegLib.measure.biometry import measure_biometry
    from FetalHeadSegLib.measure.quality import spacing_flags
    from FetalHeadSegLib.report.cohort import image_stem

    if args.ga_weeks is not None and not (math.isfinite(args.ga_weeks) and 0 < args.ga_weeks < 50):
        raise InputImageError(f"--ga-weeks must be a gestational age in weeks, got {args.ga_weeks}")
    if args.intrapartum and args.label is not None:
        raise InputImageError("--intrapartum fixes the labels (1 = pubic symphysis, 2 = fetal head); drop --label")
    labels, choice = _read_mask(args)
    if args.intrapartum and not labels.is_2d:
        raise InputImageError(f"{args.mask}: --intrapartum measures 2D frames; this image is 3D {labels.shape}")
    head_label = task_spec(Task.INTRAPARTUM).head_label if args.intrapartum else args.label
    try:
        head = _select_label(labels.array, head_label)
        inner = None
        if args.inner_label is not None:
            inner = _select_label(labels.array, args.inner_label)
            head = ((head != 0) | (inner != 0)).astype(np.uint8)
        biometry = measure_biometry(labels.with_array(head), ga_weeks=args.ga_weeks, inner_mask=inner)
        if args.intrapartum:
            biometry = biometry.with_aop(angle_of_progression(labels, apex_side=args.apex_side))
    except FetalHeadSegError as err:
        raise type(err)(f"{args.mask}: {err}") from err
    flags = spacing_flags(choice)
    for flag in flags:
        print(f"fetalheadseg: warning: {args.mask}: {flag.message}", file=sys.stderr)
    biometry = biometry.with_flags(flags)
    spacing_mm = labels.spacing_mm[: 2 if labels.is_2d else 3]
    result = with_spacing_record({"input": str(args.mask), **biometry.to_dict()}, choice, spacing_mm)
    write_measurement_files(result, biometry if choice.in_mm else None, args.json, args.markups, image_stem(args.mask))
    from FetalHeadSegLib.cli.report import biometry_table

    kind = "2D frame" if labels.is_2d else "3D volume"
    spacing = " x ".join(f"{s:g}" for s in spacing_mm) + f" mm from the {choice.source.value.replace('_', ' ')}"
    print(biometry_table(result, f"{args.mask.name} ({kind}, {spacing if choice.in_mm else 'pixel units'})"))
    return 0


MAX_LABELS = 32
"""A mask or label map has a few values; more than this (or fractions) is an image, not a segmentation."""


def _read_mask(args: argparse.Namespace) -> tuple[Any, Any]:
    """The mask with the pixel size in force, and where it came from.

    Raises:
        InputImageError: a cine, no pixel size (without --pixel-units), disagreeing sizes, or a file that is an
            image rather than a mask.
    """
    from FetalHeadSegLib.core.io import read_image_frames
    from FetalHeadSegLib.core.spacing import SpacingSource, apply_spacing, choose_spacing
    from FetalHeadSegLib.inference.preprocessing import few_distinct_values

    read = read_image_frames(args.mask)
    if len(read.frames) > 1:
        raise InputImageError(f"{args.mask}: holds {len(read.frames)} frames; measure one mask at a time")
    labels = read.frames[0]
    choice = choose_spacing(
        str(args.mask),
        read.spacing_source,
        labels.spacing_mm[:2] if labels.is_2d else labels.spacing_mm,
        command_line_mm=args.spacing,
        prefer=SpacingSource(args.spacing_source) if args.spacing_source else None,
        allow_pixels=args.pixel_units,
    )
    if choice.spacing_mm is not None:
        labels = apply_spacing(labels, choice.spacing_mm)
    values = labels.array
    distinct = few_distinct_values(values, MAX_LABELS)
    if distinct is None or not np.all(distinct == np.round(distinct)):
        count = f"more than {MAX_LABELS}" if distinct is None else str(distinct.size)
        raise InputImageError(
            f"{args.mask}: holds {count} different values: an image, not a segmentation; give a head "
            "mask or a label map (--label N picks one label)"
        )
    return labels, choice


def write_measurement_files(
    result: dict[str, Any], biometry: Any, json_path: Path | None, markups_dir: Path | None, stem: str
) -> list[Path]:
    """Write the JSON and markups (none without ``biometry``: pixel units); if any output fails, remove the ones
    already written."""
    from FetalHeadSegLib.core.atomic import write_text_atomic
    from FetalHeadSegLib.report.markups import write_markups

    written: list[Path] = []
    try:
        if markups_dir is not None and biometry is not None:
            written += write_markups(biometry, markups_dir, stem)
        if json_path is not None:
            written.append(write_text_atomic(json_path, json.dumps(result, indent=2, allow_nan=False) + "\n"))
    except OutputError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _select_label(array: np.ndarray, label: int | None) -> np.ndarray:
    if label is None:
        return array
    if not np.any(array == label):
        present = [int(v) for v in np.unique(array)[:12] if v != 0]
        raise InputImageError(f"label {label} is not in the mask (labels present: {present or 'none'})")
    return (array == label).astype(np.uint8)
