"""``fetalheadseg demo``: run the measurement pipeline on the bundled sample and say where the outputs are."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HC18_SAMPLE = "hc18_200_HC"


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "demo",
        help="measure the bundled HC18 sample and write its outputs",
        description="Measure the head on the bundled HC18 frame (expert annotation, CC BY 4.0) and compare the "
        "head circumference with the expert's value.",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("fetalheadseg-demo"),
        help="output folder (default: ./fetalheadseg-demo)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from FetalHeadSegLib.biometry import measure_biometry
    from FetalHeadSegLib.cli.biometry_command import write_outputs
    from FetalHeadSegLib.cli.report import biometry_table
    from FetalHeadSegLib.hc18 import ellipse_from_outline, rasterize_ellipse
    from FetalHeadSegLib.io import read_image, write_labelmap
    from FetalHeadSegLib.samples import get_sample

    sample = get_sample(HC18_SAMPLE)
    assert sample.annotation_path is not None
    pixel_mm = float(sample.info["pixel_size_mm"])
    outline = read_image(sample.annotation_path, spacing_mm=pixel_mm)
    # The expert's head mask: the ellipse fitted to the drawn outline, filled (HC18 convention).
    ellipse = ellipse_from_outline(outline.array[:, :, 0])
    mask = outline.with_array(rasterize_ellipse(ellipse, outline.shape[:2])[:, :, None].astype("uint8"))
    biometry = measure_biometry(mask)
    result = {"input": str(sample.image_path), **biometry.to_dict()}
    output: Path = args.output
    mask_path = write_labelmap(mask.array, mask, output / f"{HC18_SAMPLE}_head.nii.gz")
    written = write_outputs(result, biometry, output / f"{HC18_SAMPLE}_biometry.json", output, HC18_SAMPLE)
    print(biometry_table(result, f"Bundled sample {HC18_SAMPLE} (HC18, pixel {pixel_mm:.4f} mm, expert mask)"))
    reference = float(sample.info["reference_hc_mm"])
    print(
        f"\nExpert HC (HC18 CSV): {reference:.2f} mm; measured: {biometry.hc_mm:.2f} mm "
        f"(difference {biometry.hc_mm - reference:+.2f} mm)"
    )
    print(f"Outputs in {output.resolve()}:")
    for path in [mask_path, *written]:
        print(f"  {path.name}")
    summary = {"sample": HC18_SAMPLE, "reference_hc_mm": reference, "hc_mm": round(biometry.hc_mm, 3)}
    print(json.dumps(summary))
    return 0
