"""``python -m training.skull_edge CASES_CSV``: where the reference and the predicted HC ellipses lie against the
skull's outer edge in the frame, and which of the two an HC error follows.

HC18's references are ellipses drawn on the skull's outer border (van den Heuvel et al. 2018), and so are this
project's HCs. Along each of many normals of an ellipse the frame's intensity is sampled across the skull; the
skull's outer edge on that normal is the steepest fall of intensity beyond the brightest point near the ellipse
(the bone's echo), and the ellipse's offset is the median over the normals of that edge's signed distance from it
(positive: the edge lies outside the ellipse, which is too small). An ellipse on the outer edge has an offset near
zero; one that is d mm inside it all round measures an HC about 2 pi d mm short.

``training.evaluate --hc18 ... --cases-csv CASES`` writes both offsets per frame (``reference_to_skull_edge_mm``,
``prediction_to_skull_edge_mm``). This command reads them and says whether the frames whose HC is off by more than
5 mm have a predicted ellipse off the skull's edge, which a review flag can see, or a reference off it, which no
signal from the frame can predict.

Run:
    python -m training.skull_edge cases.csv
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from FetalHeadSegLib.core.errors import FetalHeadSegError, InputImageError
from FetalHeadSegLib.measure.ellipse import Ellipse
from training.case_records import HC_ERROR_BAD_MM, read_rows

NORMALS = 180
"""Normals sampled around the ellipse, at equal steps of its parameter."""
REACH_MM = 8.0
"""How far each normal reaches on either side of the ellipse."""
STEP_MM = 0.25
"""Sampling step along a normal."""
RIDGE_MM = 5.0
"""The bone's echo is the brightest point within this distance of the ellipse."""
FALL_MM = 5.0
"""The outer edge is the steepest fall within this distance beyond the bone's echo."""
OFF_EDGE_MM = 0.5
"""An ellipse whose offset exceeds this (two samples) counts as off the edge in the summary."""


def outer_edge_offset_mm(frame: np.ndarray, ellipse_mm: Ellipse, pixel_size_mm: float) -> float | None:
    """Median signed distance (mm) from the ellipse to the skull's outer edge along its normals.

    Args:
        frame: the 2D frame's intensities, indexed (x, y) as the ellipse's coordinates.
        ellipse_mm: the ellipse in mm, in the frame's (x, y) pixel grid scaled by ``pixel_size_mm``.
        pixel_size_mm: the frame's isotropic pixel size.

    Returns:
        The offset (positive: the edge lies outside the ellipse), or None when fewer than a third of the normals
        lie wholly within the frame.

    Example:
        A bright ring from 18 to 21 mm around (40, 32) mm on 0.2-mm pixels, probed with a circle of 20 mm:

        >>> x, y = np.meshgrid(np.arange(400) * 0.2, np.arange(320) * 0.2, indexing="ij")
        >>> radius = np.hypot(x - 40.0, y - 32.0)
        >>> frame = np.where((radius >= 18.0) & (radius <= 21.0), 200.0, 30.0)
        >>> outer_edge_offset_mm(frame, Ellipse((40.0, 32.0), 20.0, 20.0, 0.0), 0.2)
        1.0
    """
    from scipy.ndimage import gaussian_filter1d, map_coordinates

    t = np.linspace(0.0, 2.0 * math.pi, NORMALS, endpoint=False)
    major, minor = ellipse_mm.major_direction, ellipse_mm.minor_direction
    a, b = ellipse_mm.semi_major, ellipse_mm.semi_minor
    points = np.asarray(ellipse_mm.center) + np.outer(a * np.cos(t), major) + np.outer(b * np.sin(t), minor)
    normals = np.outer(b * np.cos(t), major) + np.outer(a * np.sin(t), minor)  # outward: the gradient of the form
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    along_mm = np.arange(-REACH_MM, REACH_MM + STEP_MM / 2, STEP_MM)
    samples_px = (points[:, None, :] + along_mm[None, :, None] * normals[:, None, :]) / pixel_size_mm
    within = np.all((samples_px >= 0) & (samples_px <= np.asarray(frame.shape) - 1), axis=(1, 2))
    if within.sum() < NORMALS / 3:
        return None
    chosen = samples_px[within]
    profiles = map_coordinates(np.asarray(frame, dtype=np.float64), [chosen[..., 0], chosen[..., 1]], order=1)
    profiles = gaussian_filter1d(profiles, 1.0, axis=1)  # one step: the bilinear samples' grain
    near = np.abs(along_mm) <= RIDGE_MM
    ridges = np.argmax(np.where(near, profiles, -np.inf), axis=1)
    slopes = np.gradient(profiles, axis=1)
    beyond = np.minimum(ridges[:, None] + np.arange(round(FALL_MM / STEP_MM) + 1), len(along_mm) - 1)
    steepest = np.argmin(np.take_along_axis(slopes, beyond, axis=1), axis=1)  # first of a repeated end: the end
    return float(np.median(along_mm[np.take_along_axis(beyond, steepest[:, None], axis=1)]))


@dataclass(frozen=True)
class EdgeCase:
    """One frame of a cases CSV: HC error (mm, measured minus reference) and both ellipses' offsets (mm)."""

    case: str
    df_mm: float
    reference_mm: float
    prediction_mm: float

    @property
    def bad(self) -> bool:
        return abs(self.df_mm) > HC_ERROR_BAD_MM


def read_edge_cases(path: Path) -> list[EdgeCase]:
    """The frames of a ``training.evaluate --hc18 ... --cases-csv`` file that hold both offsets.

    Raises:
        InputImageError: the file cannot be read, lacks the columns, or holds a value that is not a number.
    """
    needed = ("case", "df_mm", "reference_to_skull_edge_mm", "prediction_to_skull_edge_mm")
    cases = []
    for line_number, row in enumerate(read_rows(path, needed), start=2):
        if not all(row[key] for key in needed[1:]):
            continue  # no head measured, or an ellipse too close to the frame's edge
        try:
            values = [float(row[key]) for key in needed[1:]]
        except ValueError as err:
            raise InputImageError(f"{path}, line {line_number}: expected numbers in {', '.join(needed[1:])}") from err
        cases.append(EdgeCase(row["case"], *values))
    return cases


def summary_lines(cases: Sequence[EdgeCase]) -> list[str]:
    """Where both ellipses lie on the good and the bad frames, and the HC error's correlation with each offset."""
    if len(cases) < 3:
        return [f"{len(cases)} frames with both offsets: too few to summarise"]
    lines = []
    for group, title in (
        ([c for c in cases if not c.bad], f"good frames (|HC error| <= {HC_ERROR_BAD_MM:g} mm)"),
        ([c for c in cases if c.bad], f"bad frames (|HC error| > {HC_ERROR_BAD_MM:g} mm)"),
    ):
        title = f"{len(group)} {title}"
        if not group:
            lines.append(f"{title}: none")
            continue
        parts = []
        for name, values in (
            ("reference", [c.reference_mm for c in group]),
            ("prediction", [c.prediction_mm for c in group]),
        ):
            off = sum(abs(v) > OFF_EDGE_MM for v in values)
            parts.append(
                f"{name} offset median {statistics.median(values):+.2f} mm, off the edge by more than "
                f"{OFF_EDGE_MM:g} mm on {off} ({off / len(group):.0%})"
            )
        lines.append(f"{title}: " + "; ".join(parts))
    errors = [c.df_mm for c in cases]
    lines.append(
        "correlation of the HC error with the reference's offset "
        f"{_correlation(errors, [c.reference_mm for c in cases]):+.2f}, with the prediction's offset "
        f"{_correlation(errors, [-c.prediction_mm for c in cases]):+.2f} (signs such that an error that follows "
        "the offset correlates positively)"
    )
    lines.extend(
        f"  {c.case}: HC error {c.df_mm:+.2f} mm, reference offset {c.reference_mm:+.2f} mm, prediction offset "
        f"{c.prediction_mm:+.2f} mm"
        for c in sorted(cases, key=lambda c: -abs(c.df_mm))
        if c.bad
    )
    return lines


def _correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation; nan when either has no spread."""
    try:
        return statistics.correlation(x, y)
    except statistics.StatisticsError:
        return math.nan


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases_csv", type=Path, help="per-frame results of training.evaluate --hc18 --cases-csv")
    args = parser.parse_args(argv)
    try:
        lines = summary_lines(read_edge_cases(args.cases_csv))
    except FetalHeadSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
