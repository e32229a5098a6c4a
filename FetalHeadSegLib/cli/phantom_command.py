"""``fetalheadseg phantom``: generate fetal-head ultrasound phantoms with exact ground truth."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from FetalHeadSegLib.core.errors import ConfigError


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "phantom",
        help="generate simulated ultrasound volumes or frames with exact head masks and biometry",
        description="Generate phantoms: a fetal head sized by gestational age (INTERGROWTH-21st) in its "
        "surroundings, imaged by a simulated B-mode scanner. Writes per case the image, the head mask, "
        "skull/intracranial labels and a truth JSON with the exact biometry and every drawn parameter. "
        "Case n uses seed SEED + n, so every case can be regenerated on its own.",
    )
    parser.add_argument("output", type=Path, help="output folder")
    parser.add_argument("--dim", type=int, choices=[2, 3], default=3, help="3 = volume (default), 2 = frame")
    parser.add_argument("--count", type=int, default=1, help="number of cases (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    parser.add_argument(
        "--size",
        type=int,
        nargs="+",
        metavar="N",
        help="grid size X Y [Z], Y = depth (default 160 160 160, or 800 540 for frames)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        metavar="MM",
        help="voxel size in mm, one value or one per axis (default: chosen from the head size)",
    )
    ga = parser.add_mutually_exclusive_group()
    ga.add_argument("--ga-weeks", type=float, metavar="W", help="fixed gestational age (14-40 weeks)")
    ga.add_argument(
        "--ga-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=(14.0, 40.0),
        help="range of the drawn gestational age (default 14 40)",
    )
    parser.add_argument(
        "--appearance",
        choices=["classic", "randomised"],
        default="classic",
        help="classic: the one appearance of the bundled samples (default); randomised (volumes only): tissue "
        "echogenicities, speckle, blur, gain, noise, shadows, dropout, field of view, head fill, contacts, limbs, "
        "orientation and spacing drawn per case (training data for robust models)",
    )
    parser.add_argument(
        "--factors",
        type=json.loads,
        metavar="JSON",
        help="with --appearance randomised: fix or narrow factors (FetalHeadSegLib.phantom.appearance.FACTORS), "
        'e.g. \'{"shadow_fraction": 0.5, "gamma": [0.8, 1.2]}\'',
    )
    parser.add_argument("--format", choices=["nii.gz", "nrrd"], default="nii.gz", help="image format")
    parser.add_argument("--preview", action="store_true", help="also write a PNG of three orthogonal slices")
    parser.set_defaults(run=run)


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`PhantomConfig` described by the command-line options."""
    from FetalHeadSegLib.phantom import PhantomConfig

    size = tuple(args.size) if args.size else ((160, 160, 160) if args.dim == 3 else (800, 540))
    spacing = None
    if args.spacing:
        spacing = tuple(args.spacing) * args.dim if len(args.spacing) == 1 else tuple(args.spacing)
    try:
        return PhantomConfig(
            dimension=args.dim,
            size=size,
            spacing_mm=spacing,
            ga_weeks=args.ga_weeks,
            ga_weeks_range=tuple(args.ga_range),
            appearance=args.appearance,
            factors=dict(args.factors or {}),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err


def run(args: argparse.Namespace) -> int:
    """Generate and write the cases; a stderr warning for each case whose head does not fit the field of view."""
    from dataclasses import replace

    from FetalHeadSegLib.phantom import generate_phantom
    from FetalHeadSegLib.phantom.fit import fit_warning, head_fit
    from FetalHeadSegLib.phantom.output import write_phantom

    if args.count < 1:
        raise ConfigError(f"--count must be at least 1, got {args.count}")
    config = build_config(args)
    for index in range(args.count):
        seed = args.seed + index
        start = time.perf_counter()
        phantom = generate_phantom(config, seed)
        if "head_cut_by_field_of_view" not in phantom.truth and phantom.field_of_view is not None:
            # Classic cases keep the truth record of the bundled samples; the command adds the fit to the file.
            fit = head_fit(phantom.head_mask, phantom.field_of_view.array != 0, phantom.truth, args.dim == 2)
            phantom = replace(phantom, truth={**phantom.truth, **fit})
        stem = f"phantom{args.dim}d_s{seed:06d}"
        paths = write_phantom(phantom, args.output, stem, args.format, preview=args.preview)
        truth = phantom.truth
        print(
            f"[{index + 1}/{args.count}] {paths[0].parent / stem}_*: GA {truth['gestational_age_weeks']:.1f} wk, "
            f"HC {truth['hc_mm']:.1f} mm, spacing {' x '.join(f'{s:.3f}' for s in truth['spacing_mm'])} mm "
            f"({time.perf_counter() - start:.1f} s)"
        )
        warning = fit_warning(truth)
        if warning is not None:
            print(f"warning: {stem}: {warning}", file=sys.stderr)
    return 0
