"""Does the drawn head fit the field of view? The numbers the truth record and the phantom command report."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.measure.quality import touches_border

CUT_TOLERANCE = 0.01
"""The head counts as cut when more than this share of its voxels lies outside the imaged field of view."""


def head_fit(head_mask: Image, field_of_view: np.ndarray, truth: dict[str, Any], is_2d: bool) -> dict[str, Any]:
    """How the head sits in the field of view.

    Args:
        head_mask: the head mask on the whole grid (the exact truth, also where the image is black).
        field_of_view: (X, Y, Z) bool mask of the imaged region (cone, fan or crop box).
        truth: the case's truth record (``ofd_mm``, ``bpd_mm``, ``head_volume_ml``).
        is_2d: a frame (only the in-plane edges count, and only they have an extent).

    Returns:
        ``head_fill_fraction`` (OFD / the grid's smallest extent, first to last voxel centre: above 1 the head
        cannot fit in any orientation), ``head_imaged_fraction`` (imaged head voxels over the analytic head's
        volume, or area for frames, at most 1; within a voxel layer of the truth) and
        ``head_cut_by_field_of_view`` (the head reaches the grid's border, or more than :data:`CUT_TOLERANCE` of
        its voxels are not imaged).
    """
    head = head_mask.array != 0
    spacing = head_mask.spacing_mm
    extents = [s * (n - 1) for s, n in zip(spacing, head_mask.shape, strict=True)]
    smallest = min(extents[:2] if is_2d else extents)
    count = int(head.sum())
    imaged = int((head & np.asarray(field_of_view, dtype=bool)).sum())
    if is_2d:
        analytic, voxel = math.pi * truth["ofd_mm"] * truth["bpd_mm"] / 4.0, spacing[0] * spacing[1]
    else:
        analytic, voxel = 1000.0 * truth["head_volume_ml"], spacing[0] * spacing[1] * spacing[2]
    cut = count == 0 or touches_border(head, is_2d) or imaged < (1.0 - CUT_TOLERANCE) * count
    return {
        "head_fill_fraction": round(float(truth["ofd_mm"]) / smallest, 4),
        "head_imaged_fraction": round(min(1.0, imaged * voxel / analytic), 4),
        "head_cut_by_field_of_view": bool(cut),
    }


def fit_warning(truth: dict[str, Any]) -> str | None:
    """One sentence when the truth record says the head is cut by the field of view, else None."""
    if not truth.get("head_cut_by_field_of_view"):
        return None
    return (
        f"the head does not fit the field of view: about {100 * truth['head_imaged_fraction']:.0f} % of it is "
        f"imaged{', it reaches the volume border' if truth.get('head_touches_border') else ''} (OFD "
        f"{truth['ofd_mm']:.0f} mm = {100 * truth['head_fill_fraction']:.0f} % of the smallest extent); use a coarser "
        "--spacing, a larger --size or an earlier --ga-weeks for a whole head"
    )
