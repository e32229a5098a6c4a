"""Writing phantom cases to disk: image, head mask, skull/brain labels, truth record and an optional preview."""

from __future__ import annotations

import json
import os
from pathlib import Path

from FetalHeadSegLib.core.atomic import atomic_output_dir
from FetalHeadSegLib.core.io import write_image
from FetalHeadSegLib.phantom.generator import Phantom

IMAGE_FORMATS = ("nii.gz", "nrrd")


def write_phantom(
    phantom: Phantom,
    output_dir: str | os.PathLike[str],
    stem: str,
    file_format: str = "nii.gz",
    preview: bool = False,
) -> list[Path]:
    """Write one case as ``<stem>_image``, ``<stem>_head`` (mask), ``<stem>_labels`` and ``<stem>_truth.json``.

    All files of a case appear together or not at all. Returns the written paths.

    Raises:
        ValueError: unknown ``file_format``.
        OutputError: the folder cannot be written.
    """
    if file_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {file_format!r}; use one of {', '.join(IMAGE_FORMATS)}")
    directory = Path(output_dir)
    names = [
        f"{stem}_image.{file_format}",
        f"{stem}_head.{file_format}",
        f"{stem}_labels.{file_format}",
        f"{stem}_truth.json",
    ]
    with atomic_output_dir(directory) as staging:
        write_image(phantom.image, staging / names[0])
        write_image(phantom.head_mask, staging / names[1])
        write_image(phantom.labels, staging / names[2])
        (staging / names[3]).write_text(json.dumps(phantom.truth, indent=2) + "\n", encoding="utf-8")
        if preview:
            from FetalHeadSegLib.report.preview import orthogonal_slices, write_png

            names.append(f"{stem}_preview.png")
            write_png(orthogonal_slices(phantom.image, phantom.head_mask), staging / names[-1])
    return [directory / name for name in names]
