"""``fetalheadseg demo``: segment and measure the bundled samples, compare with their truth, show the outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from FetalHeadSegLib.core.tasks import Task

HC18_SAMPLE = "hc18_207_HC"
PHANTOM_SAMPLE = "phantom3d_s000001"
PSFHS_SAMPLE = "psfhs_03744"


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "demo",
        help="segment the bundled samples and compare with their truth",
        description="Segment the bundled 3D phantom (exact truth known) and the bundled HC18 frame (expert HC "
        "known) with the installed default models, print the biometry and the agreement with the truth, and "
        "write every output. Without installed models, measures the HC18 expert annotation instead.",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("fetalheadseg-demo"),
        help="output folder (default: ./fetalheadseg-demo)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from FetalHeadSegLib.models.catalog import list_models

    installed = {(entry.dimension, entry.task) for entry in list_models()}
    summary: dict[str, Any] = {}
    if (3, Task.HEAD) in installed:
        summary["phantom3d"] = _segment_phantom(args)
    if (2, Task.HEAD) in installed:
        summary["hc18"] = _segment_hc18(args)
    if (2, Task.INTRAPARTUM) in installed:
        summary["psfhs"] = _segment_psfhs(args)
    if not summary:
        print("No trained model is installed: measuring the expert annotation of the HC18 sample instead.\n")
        summary["hc18_annotation"] = _measure_annotation(args)
    print(f"\nOutputs in {args.output.resolve()}")
    print(json.dumps(summary))
    return 0


def _segment_sample(
    args: argparse.Namespace, name: str, dimension: int, task: Task = Task.HEAD, spacing_mm: float | None = None
) -> tuple[Any, Any, Any]:
    """Segment one bundled sample with the default model for it and write its outputs into the demo folder."""
    from FetalHeadSegLib.core.io import read_image
    from FetalHeadSegLib.core.samples import get_sample
    from FetalHeadSegLib.core.spacing import SpacingChoice, SpacingSource
    from FetalHeadSegLib.inference.engine import Segmenter
    from FetalHeadSegLib.models.catalog import default_model
    from FetalHeadSegLib.report.outputs import write_outputs

    sample = get_sample(name)
    segmenter = Segmenter(default_model(dimension, task), args.device)
    image = read_image(sample.image_path, spacing_mm=spacing_mm)
    result = segmenter.segment(image, source=str(sample.image_path))
    # The HC18 frame's pixel size comes from the data set's CSV (recorded in samples.json).
    spacing = SpacingChoice(None, SpacingSource.HEADER if spacing_mm is None else SpacingSource.CSV)
    write_outputs(result, image, args.output, name, source=str(sample.image_path), spacing=spacing)
    bundle = segmenter.bundle
    print(f"{name} with {bundle.id}@{bundle.version} on {result.device} ({result.seconds:.1f} s)")
    if result.biometry is not None and task is Task.HEAD:
        from FetalHeadSegLib.cli.report import biometry_table
        from FetalHeadSegLib.report.outputs import biometry_record

        print(biometry_table(biometry_record(result, str(sample.image_path)), "  measured on the segmentation"))
    return sample, image, result


def _segment_phantom(args: argparse.Namespace) -> dict[str, Any]:
    from FetalHeadSegLib.core.io import read_image
    from FetalHeadSegLib.measure.metrics import segmentation_metrics

    sample, image, result = _segment_sample(args, PHANTOM_SAMPLE, 3)
    metrics = segmentation_metrics(
        result.labels.array == result.model.head_label, read_image(sample.annotation_path).array > 0, image.spacing_mm
    )
    truth = json.loads((sample.image_path.parent / sample.info["truth"]).read_text())
    print(f"  Dice against the exact head mask: {metrics.dice:.4f}; HD95 {metrics.hd95_mm:.2f} mm")
    print(
        f"  truth: HC {truth['hc_mm']:.1f} mm, BPD {truth['bpd_mm']:.1f} mm, OFD {truth['ofd_mm']:.1f} mm, "
        f"volume {truth['head_volume_ml']:.1f} mL\n"
    )
    return {
        "dice": round(metrics.dice, 4),
        "hc_mm": result.biometry.hc_mm if result.biometry else None,
        "truth_hc_mm": truth["hc_mm"],
    }


def _segment_hc18(args: argparse.Namespace) -> dict[str, Any]:
    from FetalHeadSegLib.core.samples import get_sample

    pixel_mm = float(get_sample(HC18_SAMPLE).info["pixel_size_mm"])
    sample, _, result = _segment_sample(args, HC18_SAMPLE, 2, spacing_mm=pixel_mm)
    reference = float(sample.info["reference_hc_mm"])
    hc = None if result.biometry is None else result.biometry.hc_mm
    if hc is not None:
        print(f"  expert HC (HC18 CSV) {reference:.2f} mm; difference {hc - reference:+.2f} mm\n")
    return {"hc_mm": None if hc is None else round(hc, 2), "reference_hc_mm": reference}


def _segment_psfhs(args: argparse.Namespace) -> dict[str, Any]:
    from FetalHeadSegLib.core.io import read_image
    from FetalHeadSegLib.measure.aop import angle_of_progression

    sample, _, result = _segment_sample(args, PSFHS_SAMPLE, 2, task=Task.INTRAPARTUM)
    expert = angle_of_progression(read_image(sample.annotation_path)).aop_deg
    measured = result.biometry.aop.aop_deg if result.biometry is not None and result.biometry.aop else None
    if measured is not None:
        print(f"  angle of progression {measured:.1f} deg; on the expert masks {expert:.1f} deg\n")
    return {"aop_deg": None if measured is None else round(measured, 1), "expert_aop_deg": round(expert, 1)}


def _measure_annotation(args: argparse.Namespace) -> dict[str, Any]:
    from FetalHeadSegLib.cli.biometry_command import write_measurement_files
    from FetalHeadSegLib.cli.report import biometry_table
    from FetalHeadSegLib.core.io import read_image, write_labelmap
    from FetalHeadSegLib.core.samples import get_sample
    from FetalHeadSegLib.measure.biometry import measure_biometry
    from FetalHeadSegLib.measure.hc18 import ellipse_from_outline, rasterize_ellipse

    sample = get_sample(HC18_SAMPLE)
    assert sample.annotation_path is not None
    pixel_mm = float(sample.info["pixel_size_mm"])
    outline = read_image(sample.annotation_path, spacing_mm=pixel_mm)
    # The expert's head mask: the ellipse fitted to the drawn outline, filled (HC18 convention).
    ellipse = ellipse_from_outline(outline.array[:, :, 0])
    mask = outline.with_array(rasterize_ellipse(ellipse, outline.shape[:2])[:, :, None].astype("uint8"))
    biometry = measure_biometry(mask)
    result = {"input": str(sample.image_path), **biometry.to_dict()}
    write_labelmap(mask.array, mask, args.output / f"{HC18_SAMPLE}_head.nii.gz")
    write_measurement_files(result, biometry, args.output / f"{HC18_SAMPLE}_biometry.json", args.output, HC18_SAMPLE)
    print(biometry_table(result, f"Bundled sample {HC18_SAMPLE} (HC18, pixel {pixel_mm:.4f} mm, expert mask)"))
    reference = float(sample.info["reference_hc_mm"])
    print(
        f"\nExpert HC (HC18 CSV): {reference:.2f} mm; measured: {biometry.hc_mm:.2f} mm "
        f"(difference {biometry.hc_mm - reference:+.2f} mm)"
    )
    return {"reference_hc_mm": reference, "hc_mm": round(biometry.hc_mm, 3)}
