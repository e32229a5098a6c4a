"""``fetalheadseg biometry``: measure the head in an existing segmentation."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from FetalHeadSegLib.errors import FetalHeadSegError, InputImageError, OutputError


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
        "--probe-side",
        choices=["top", "bottom", "left", "right"],
        default="top",
        help="image edge of the transducer for --intrapartum (default: top)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write the measurements as JSON")
    parser.add_argument("--markups", type=Path, metavar="OUTDIR", help="write Slicer markups (.mrk.json) here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from FetalHeadSegLib.aop import PSFHS_HEAD_LABEL, angle_of_progression
    from FetalHeadSegLib.biometry import measure_biometry
    from FetalHeadSegLib.io import is_raster_path, read_image
    from FetalHeadSegLib.quality import Flag

    if args.ga_weeks is not None and not (math.isfinite(args.ga_weeks) and 0 < args.ga_weeks < 50):
        raise InputImageError(f"--ga-weeks must be a gestational age in weeks, got {args.ga_weeks}")
    if args.intrapartum and args.label is not None:
        raise InputImageError("--intrapartum fixes the labels (1 = pubic symphysis, 2 = fetal head); drop --label")
    labels = read_image(args.mask, spacing_mm=args.spacing)
    if args.intrapartum and not labels.is_2d:
        raise InputImageError(f"{args.mask}: --intrapartum measures 2D frames; this image is 3D {labels.shape}")
    head_label = PSFHS_HEAD_LABEL if args.intrapartum else args.label
    try:
        head = _select_label(labels.array, head_label)
        inner = None
        if args.inner_label is not None:
            inner = _select_label(labels.array, args.inner_label)
            head = ((head != 0) | (inner != 0)).astype(np.uint8)
        biometry = measure_biometry(labels.with_array(head), ga_weeks=args.ga_weeks, inner_mask=inner)
        if args.intrapartum:
            biometry = biometry.with_aop(angle_of_progression(labels, probe_side=args.probe_side))
    except FetalHeadSegError as err:
        raise type(err)(f"{args.mask}: {err}") from err
    if args.spacing is None and is_raster_path(args.mask):
        message = "the file carries no pixel size: lengths are in pixels, not mm (give --spacing)"
        print(f"fetalheadseg: warning: {args.mask}: {message}", file=sys.stderr)
        biometry = biometry.with_flags([Flag("spacing_unknown", message)])
    result = {"input": str(args.mask), **biometry.to_dict()}
    write_outputs(result, biometry, args.json, args.markups, output_stem(args.mask))
    from FetalHeadSegLib.cli.report import biometry_table

    spacing = " x ".join(f"{s:g}" for s in labels.spacing_mm[: 2 if labels.is_2d else 3])
    kind = "2D frame" if labels.is_2d else "3D volume"
    print(biometry_table(result, f"{args.mask.name} ({kind}, spacing {spacing} mm)"))
    return 0


def write_outputs(
    result: dict[str, Any], biometry: Any, json_path: Path | None, markups_dir: Path | None, stem: str
) -> list[Path]:
    """Write the JSON and markups; if any output fails, remove the ones already written."""
    from FetalHeadSegLib.atomic import write_text_atomic
    from FetalHeadSegLib.markups import write_markups

    written: list[Path] = []
    try:
        if markups_dir is not None:
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


def output_stem(path: Path) -> str:
    """The file name without its image suffix (``case.nii.gz`` -> ``case``)."""
    name = path.name
    for suffix in (".nii.gz", ".seg.nrrd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
