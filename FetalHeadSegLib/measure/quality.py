"""Quality flags: warnings that travel with every measurement (never silently dropped)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from FetalHeadSegLib.core.spacing import SpacingChoice
    from FetalHeadSegLib.measure.ellipse import Ellipse

PLAUSIBLE_HC_MM = (40.0, 400.0)
"""HC range of real fetal heads from about 11 weeks to term (HC18 spans 44-346 mm)."""

MAX_RELATIVE_FIT_RESIDUAL = 0.02
"""Largest RMS distance of the border to its fitted ellipse, as a fraction of the mean semi-axis."""

MIN_FRAGMENT_FRACTION = 0.01
"""A second component at least this share of the mask makes the mask 'fragmented'."""

CEPHALIC_INDEX_RANGE = (74.0, 83.0)
"""Outside it (dolicho- or brachycephaly) BPD-based dating is unreliable (Hadlock et al., AJR 1981)."""


@dataclass(frozen=True)
class Flag:
    """A quality warning: a stable machine-readable ``code`` and a sentence for people."""

    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def touches_border(mask: np.ndarray, is_2d: bool) -> bool:
    """True when the (X, Y, Z) mask reaches a face of the image (the in-plane edges only for 2D frames)."""
    faces = [mask[0], mask[-1], mask[:, 0], mask[:, -1]]
    if not is_2d:
        faces += [mask[:, :, 0], mask[:, :, -1]]
    return any(bool(face.any()) for face in faces)


@dataclass(frozen=True)
class ComponentInfo:
    """Connected components of the raw mask: how many, and the largest one's share of the mask."""

    count: int
    largest_fraction: float
    second_largest_fraction: float


def mask_flags(head: np.ndarray, components: ComponentInfo, is_2d: bool) -> list[Flag]:
    """Flags about the mask itself: fragmentation and contact with the image border."""
    flags = []
    if components.second_largest_fraction >= MIN_FRAGMENT_FRACTION:
        flags.append(
            Flag(
                "fragmented",
                f"the mask has {components.count} separate parts; only the largest "
                f"({100 * components.largest_fraction:.1f} % of the mask) was measured",
            )
        )
    if touches_border(head, is_2d):
        flags.append(Flag("touches_border", "the head touches the image border: it may be cut off"))
    return flags


def measurement_flags(ellipse: Ellipse, hc_mm: float) -> list[Flag]:
    """Flags about the fitted ellipse: poor fit, implausible size, atypical head shape."""
    flags = []
    mean_semi_axis = 0.5 * (ellipse.semi_major + ellipse.semi_minor)
    if ellipse.residual_rms > MAX_RELATIVE_FIT_RESIDUAL * mean_semi_axis:
        flags.append(
            Flag(
                "fit_residual_high",
                f"the border deviates from its ellipse by {ellipse.residual_rms:.2f} mm RMS "
                f"(more than {100 * MAX_RELATIVE_FIT_RESIDUAL:g} % of the head's size): check the segmentation",
            )
        )
    low, high = PLAUSIBLE_HC_MM
    if not low <= hc_mm <= high:
        flags.append(
            Flag(
                "implausible_size",
                f"HC {hc_mm:.1f} mm is outside the plausible fetal range {low:g}-{high:g} mm: "
                "check the pixel size and the segmentation",
            )
        )
    cephalic_index = 100.0 * ellipse.semi_minor / ellipse.semi_major
    low_ci, high_ci = CEPHALIC_INDEX_RANGE
    if not low_ci <= cephalic_index <= high_ci:
        flags.append(
            Flag(
                "cephalic_index_atypical",
                f"cephalic index {cephalic_index:.1f} is outside {low_ci:g}-{high_ci:g}: "
                "BPD-based dating is unreliable, prefer HC",
            )
        )
    return flags


def spacing_flags(choice: SpacingChoice) -> list[Flag]:
    """The ``spacing_unknown`` flag when no pixel size is known (lengths in pixels); none otherwise."""
    if choice.in_mm:
        return []
    return [Flag("spacing_unknown", "no pixel size is known: lengths are in pixels (keys *_px)")]
