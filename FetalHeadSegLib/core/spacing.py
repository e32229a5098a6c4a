"""Where a pixel size comes from, and the one rule that decides which to use.

A length is reported in mm only when the pixel size is known. It can come from the image header (NIfTI, NRRD,
MetaImage), a DICOM ultrasound region calibration, a per-file CSV (HC18 style) or the command line. Raster
formats (PNG, JPEG, ...) carry none. When two sources disagree the user must choose one: a silent override has
turned a 203 mm head into 115 mm before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from FetalHeadSegLib.core.errors import InputImageError
from FetalHeadSegLib.core.image import Image


class SpacingSource(StrEnum):
    """Where the pixel size of an image came from (the value goes into the biometry JSON and summary CSV)."""

    HEADER = "header"
    DICOM_REGION = "dicom_region"
    CSV = "csv"
    COMMAND_LINE = "command_line"
    NONE = "none"
    """No pixel size is known: lengths are in pixels (only when the user asked for pixel units)."""


PIXEL_PLACEHOLDER_MM = (1.0,)
"""The spacing put on an image measured in pixel units: one "mm" is one pixel."""
CHOOSABLE = (SpacingSource.HEADER, SpacingSource.DICOM_REGION, SpacingSource.CSV, SpacingSource.COMMAND_LINE)
RELATIVE_TOLERANCE = 1e-4
"""Spacings closer than this (relative) are the same value written with other rounding."""


@dataclass(frozen=True)
class SpacingChoice:
    """The pixel size to use for one file.

    Attributes:
        spacing_mm: a spacing (1 to 3 values) to put on the image, or None to keep the file's own. In pixel
            units it is 1 (a raster file's own resolution tag, e.g. a PNG's pHYs chunk, is not trusted).
        source: where the spacing in force comes from.
    """

    spacing_mm: tuple[float, ...] | None
    source: SpacingSource

    @property
    def in_mm(self) -> bool:
        """True when lengths measured with this spacing are millimetres."""
        return self.source is not SpacingSource.NONE


def choose_spacing(
    source_name: str,
    file_source: SpacingSource,
    file_spacing_mm: Sequence[float],
    command_line_mm: Sequence[float] | None = None,
    csv_mm: float | None = None,
    prefer: SpacingSource | None = None,
    allow_pixels: bool = False,
) -> SpacingChoice:
    """Decide the pixel size of one file from every source that gives one.

    Args:
        source_name: the file, for messages.
        file_source: what the file itself provides (``NONE`` for raster formats).
        file_spacing_mm: the file's own spacing: two in-plane values for a 2D frame, three for a volume.
        command_line_mm: ``--spacing`` values, if given.
        csv_mm: the file's row in ``--spacing-csv``, if any.
        prefer: the source the user chose explicitly (``--spacing-source``); required when sources disagree.
        allow_pixels: with no pixel size anywhere, measure in pixels instead of refusing (``--pixel-units``).

    Raises:
        InputImageError: no pixel size is known (and pixels were not allowed), the sources disagree and none was
            chosen, or the chosen source gives none for this file.
    """
    offered: dict[SpacingSource, tuple[float, ...] | None] = {}
    if file_source is not SpacingSource.NONE:
        offered[file_source] = None
    if csv_mm is not None:
        offered[SpacingSource.CSV] = (float(csv_mm),)
    if command_line_mm:
        offered[SpacingSource.COMMAND_LINE] = parse_spacing(command_line_mm)
    if prefer is not None:
        if prefer not in offered:
            raise InputImageError(
                f"{source_name}: --spacing-source {prefer.value}, but that source gives no pixel size for this file"
            )
        return SpacingChoice(offered[prefer], prefer)
    if not offered:
        if allow_pixels:
            return SpacingChoice(PIXEL_PLACEHOLDER_MM, SpacingSource.NONE)
        raise InputImageError(
            f"{source_name}: the file carries no pixel size; give --spacing MM or --spacing-csv FILE "
            "(or --pixel-units to measure in pixels)"
        )
    axes = len(file_spacing_mm)
    values = {source: _as_values(given, file_spacing_mm, axes) for source, given in offered.items()}
    first_source, first = next(iter(values.items()))
    for source, value in values.items():
        if not _agree(first, value):
            raise InputImageError(
                f"{source_name}: the {_describe(first_source)} gives {_format(first)} mm but the "
                f"{_describe(source)} gives {_format(value)} mm; choose one with --spacing-source "
                f"{first_source.value} or --spacing-source {source.value}"
            )
    return SpacingChoice(offered[first_source], first_source)


def _as_values(given: tuple[float, ...] | None, file_spacing_mm: Sequence[float], axes: int) -> tuple[float, ...]:
    """The spacing a source stands for along the image's ``axes`` (one user value means isotropic)."""
    if given is None:
        return tuple(float(v) for v in file_spacing_mm)
    return given * axes if len(given) == 1 else tuple(given[:axes])


def _agree(first: tuple[float, ...], second: tuple[float, ...]) -> bool:
    return len(first) == len(second) and all(
        math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE) for a, b in zip(first, second, strict=True)
    )


def _format(values: tuple[float, ...]) -> str:
    return "x".join(f"{v:.6g}" for v in values)


def _describe(source: SpacingSource) -> str:
    return {
        SpacingSource.HEADER: "image header",
        SpacingSource.DICOM_REGION: "DICOM ultrasound region",
        SpacingSource.CSV: "spacing CSV",
        SpacingSource.COMMAND_LINE: "--spacing option",
        SpacingSource.NONE: "file",
    }[source]


def parse_spacing(values: Sequence[float] | float) -> tuple[float, ...]:
    """Validate 1 to 3 user-given spacings (mm); one value means isotropic.

    Raises:
        InputImageError: not 1-3 values, or a value that is not finite and positive.
    """
    spacing = (float(values),) if isinstance(values, (int, float)) else tuple(float(v) for v in values)
    if not 1 <= len(spacing) <= 3:
        raise InputImageError(f"spacing needs 1 to 3 values in mm, got {len(spacing)}")
    for value in spacing:
        if not (math.isfinite(value) and value > 0):
            raise InputImageError(f"spacing must be finite and positive (mm), got {value}")
    return spacing


def apply_spacing(image: Image, spacing_mm: Sequence[float] | float) -> Image:
    """The same voxels with a user-given voxel size: one value (isotropic; a 2D frame keeps its slice
    thickness), two (a 2D frame's in-plane size) or three.

    Raises:
        InputImageError: an invalid spacing, or two values for a volume.
    """
    spacing = parse_spacing(spacing_mm)
    current = image.spacing_mm
    if len(spacing) == 1:
        new = (spacing[0], spacing[0], current[2] if image.is_2d else spacing[0])
    elif len(spacing) == 2:
        if not image.is_2d:
            raise InputImageError("two spacing values are for 2D frames; give one or three for a volume")
        new = (spacing[0], spacing[1], current[2])
    else:
        new = (spacing[0], spacing[1], spacing[2])
    return image.with_spacing(new)


PIXEL_KEYS = {"hc_mm": "hc_px", "bpd_mm": "bpd_px", "bpd_outer_inner_mm": "bpd_outer_inner_px", "ofd_mm": "ofd_px"}
"""Length keys renamed when no pixel size is known, so that no number labelled mm is in pixels."""


def with_spacing_record(record: dict[str, Any], choice: SpacingChoice, spacing_mm: Sequence[float]) -> dict[str, Any]:
    """A biometry JSON record with ``spacing_mm`` and ``spacing_source``; in pixel units, lengths renamed ``_px``.

    In pixel units the head volume, gestational ages, size-for-age, landmarks in mm and the ellipse in mm are
    dropped (null or empty): none of them means anything without a pixel size.
    """
    updated = dict(record)
    updated["spacing_source"] = choice.source.value
    if choice.in_mm:
        updated["spacing_mm"] = [round(float(v), 6) for v in spacing_mm]
        updated["units"] = "mm"
        return updated
    updated["spacing_mm"] = None
    updated["units"] = "px"
    for key, pixel_key in PIXEL_KEYS.items():
        if key in updated:
            updated[pixel_key] = updated.pop(key)
    for key in ("head_volume_ml", "size_for_ga", "landmarks", "ellipse_in_plane_mm", "plane"):
        if key in updated:
            updated[key] = None
    updated["ga_weeks"] = {}
    return updated
