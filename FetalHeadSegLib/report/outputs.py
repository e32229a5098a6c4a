"""Writing one segmentation's outputs together: label map, biometry JSON, Slicer markups, QC picture."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from FetalHeadSegLib.core.atomic import atomic_output_dir
from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.core.spacing import SpacingChoice, SpacingSource, with_spacing_record
from FetalHeadSegLib.inference.engine import Segmentation
from FetalHeadSegLib.measure.biometry import BIOMETRY_JSON_KEYS
from FetalHeadSegLib.report.cohort import LABEL_SUFFIXES

LABEL_FORMATS = tuple(LABEL_SUFFIXES)
EMPTY_BIOMETRY: dict[str, Any] = {key: None for key in BIOMETRY_JSON_KEYS} | {"ga_weeks": {}, "flags": []}


def biometry_record(result: Segmentation, source: str) -> dict[str, Any]:
    """The biometry JSON of a segmentation: the biometry keys (null when nothing was measured), flags, provenance."""
    measured = result.biometry.to_dict() if result.biometry is not None else dict(EMPTY_BIOMETRY)
    if result.biometry is None:
        measured["flags"] = [flag.to_dict() for flag in result.flags]
    review = result.review.to_dict() if result.review is not None else {}
    return {"input": source, **review, **measured, "provenance": result.provenance()}


def case_record(
    result: Segmentation, image: Image, source: str, spacing: SpacingChoice | None = None
) -> dict[str, Any]:
    """The biometry JSON of one case: :func:`biometry_record` with where its pixel size came from (in pixel
    units, lengths under ``_px`` keys)."""
    choice = spacing or SpacingChoice(None, SpacingSource.HEADER)
    spacing_mm = image.spacing_mm[:2] if image.is_2d else image.spacing_mm
    return with_spacing_record(biometry_record(result, source), choice, spacing_mm)


def write_outputs(
    result: Segmentation,
    image: Image,
    output_dir: str | os.PathLike[str],
    stem: str,
    label_format: str = "seg.nrrd",
    qc: bool = True,
    source: str = "",
    spacing: SpacingChoice | None = None,
    record: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write one case's outputs: ``<stem>.seg.nrrd`` (or ``<stem>_seg.nii.gz``), ``<stem>_<name>.mrk.json``,
    ``<stem>_qc.png``, ``<stem>_uncertainty.nii.gz`` (with test-time augmentation) and, last,
    ``<stem>_biometry.json``. Each file appears whole; the JSON's presence means the case is complete.

    Args:
        spacing: where the pixel size came from (recorded in the JSON); in pixel units no markups are written
            and lengths are reported under ``_px`` keys. None: the image header's spacing, in mm.
        record: the biometry JSON to write, when the caller has built it (:func:`case_record`); else built here.

    Returns:
        The paths written, by kind.
    """
    from FetalHeadSegLib.core.io import write_image, write_labelmap
    from FetalHeadSegLib.report.markups import biometry_markups
    from FetalHeadSegLib.report.qc import qc_picture
    from FetalHeadSegLib.report.segfile import write_seg_nrrd

    if label_format not in LABEL_SUFFIXES:
        raise ValueError(f"unknown label format {label_format!r}; use one of {', '.join(LABEL_SUFFIXES)}")
    choice = spacing or SpacingChoice(None, SpacingSource.HEADER)
    directory = Path(output_dir)
    names: dict[str, str] = {"biometry": f"{stem}_biometry.json"}
    with atomic_output_dir(directory, last=names["biometry"]) as staging:
        names["labels"] = f"{stem}{LABEL_SUFFIXES[label_format]}"
        if label_format == "seg.nrrd":
            write_seg_nrrd(result.labels, result.model.labels, staging / names["labels"])
        else:
            write_labelmap(result.labels.array, result.labels, staging / names["labels"])
        if result.uncertainty is not None:
            names["uncertainty"] = f"{stem}_uncertainty.nii.gz"
            write_image(result.uncertainty, staging / names["uncertainty"])
        record = record if record is not None else case_record(result, image, source, choice)
        (staging / names["biometry"]).write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", "utf-8")
        if result.biometry is not None and choice.in_mm:
            for key, document in biometry_markups(result.biometry).items():
                names[f"markups_{key}"] = f"{stem}_{key}.mrk.json"
                (staging / names[f"markups_{key}"]).write_text(json.dumps(document, indent=2), "utf-8")
        if qc:
            from FetalHeadSegLib.report.preview import write_png

            head = result.labels.with_array((result.labels.array == result.model.head_label).astype("uint8"))
            names["qc"] = f"{stem}_qc.png"
            write_png(qc_picture(image, head, result.biometry, record), staging / names["qc"])
    return {kind: directory / name for kind, name in names.items()}
