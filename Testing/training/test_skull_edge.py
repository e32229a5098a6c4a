"""The skull's outer edge against an ellipse, on drawn skulls whose edge lies where the drawing puts it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from FetalHeadSegLib.measure.ellipse import Ellipse
from training.skull_edge import EdgeCase, main, outer_edge_offset_mm, read_edge_cases, summary_lines

PIXEL_MM = 0.2
CENTRE_MM = (40.0, 32.0)


def _frame(outer: Ellipse, thickness: float) -> np.ndarray:
    """A 0.2-mm frame (x, y) with a bright skull whose outer border is ``outer``: bone (200) where the ellipse's
    normalised radius lies between 1 - ``thickness`` and 1, brain (60) inside, tissue (25) outside, blurred by
    0.3 mm as an ultrasound image's point spread blurs it."""
    x, y = np.meshgrid(np.arange(400) * PIXEL_MM, np.arange(320) * PIXEL_MM, indexing="ij")
    along = (x - outer.center[0]) * math.cos(outer.angle_rad) + (y - outer.center[1]) * math.sin(outer.angle_rad)
    across = -(x - outer.center[0]) * math.sin(outer.angle_rad) + (y - outer.center[1]) * math.cos(outer.angle_rad)
    radius = np.hypot(along / outer.semi_major, across / outer.semi_minor)
    frame = np.where(radius <= 1.0, np.where(radius >= 1.0 - thickness, 200.0, 60.0), 25.0)
    return np.asarray(gaussian_filter(frame, 0.3 / PIXEL_MM))


@pytest.mark.parametrize(("probe_radius_mm", "expected_mm"), [(21.0, 0.0), (20.0, 1.0), (22.0, -1.0), (19.0, 2.0)])
def test_a_circle_inside_the_skulls_outer_edge_has_a_positive_offset(
    probe_radius_mm: float, expected_mm: float
) -> None:
    frame = _frame(Ellipse(CENTRE_MM, 21.0, 21.0, 0.0), thickness=3.0 / 21.0)  # bone from 18 to 21 mm
    offset = outer_edge_offset_mm(frame, Ellipse(CENTRE_MM, probe_radius_mm, probe_radius_mm, 0.0), PIXEL_MM)
    assert offset == pytest.approx(expected_mm, abs=0.25)  # one sampling step


def test_an_oblique_ellipse_on_its_skull_is_on_the_edge_and_a_turned_one_is_not() -> None:
    skull = Ellipse(CENTRE_MM, 26.0, 17.0, 0.6)
    frame = _frame(skull, thickness=0.12)
    assert outer_edge_offset_mm(frame, skull, PIXEL_MM) == pytest.approx(0.0, abs=0.25)
    turned = Ellipse(CENTRE_MM, 26.0, 17.0, 0.6 + math.pi / 2)
    offset = outer_edge_offset_mm(frame, turned, PIXEL_MM)
    assert offset is not None and abs(offset) > 1.0


def test_an_ellipse_mostly_outside_the_frame_has_no_offset() -> None:
    frame = _frame(Ellipse(CENTRE_MM, 21.0, 21.0, 0.0), thickness=0.15)
    assert outer_edge_offset_mm(frame, Ellipse((95.0, 32.0), 21.0, 21.0, 0.0), PIXEL_MM) is None


def test_the_summary_says_which_offset_the_errors_follow() -> None:
    cases = [
        EdgeCase("001_HC", 0.5, 0.0, 0.0),
        EdgeCase("002_HC", -1.0, -0.25, 0.0),
        EdgeCase("003_HC", 6.3, 1.0, 0.0),  # reference 1 mm inside the edge: 2 pi mm short
        EdgeCase("004_HC", -6.0, 0.0, 1.0),  # prediction 1 mm inside the edge
        EdgeCase("005_HC", 1.5, 0.25, 0.0),
    ]
    lines = summary_lines(cases)
    assert lines[0] == (
        "3 good frames (|HC error| <= 5 mm): reference offset median +0.00 mm, off the edge by more than 0.5 mm on 0 "
        "(0%); prediction offset median +0.00 mm, off the edge by more than 0.5 mm on 0 (0%)"
    )
    assert lines[1].startswith("2 bad frames (|HC error| > 5 mm): reference offset median +0.50 mm")
    assert lines[3:] == [
        "  003_HC: HC error +6.30 mm, reference offset +1.00 mm, prediction offset +0.00 mm",
        "  004_HC: HC error -6.00 mm, reference offset +0.00 mm, prediction offset +1.00 mm",
    ]
    reference_r = float(np.corrcoef([0.5, -1.0, 6.3, -6.0, 1.5], [0.0, -0.25, 1.0, 0.0, 0.25])[0, 1])
    assert f"with the reference's offset {reference_r:+.2f}" in lines[2]


def test_the_command_summarises_an_evaluations_cases(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text(
        "case,df_mm,reference_to_skull_edge_mm,prediction_to_skull_edge_mm\n"
        "001_HC,0.5,0.0,0.0\n002_HC,-1.0,-0.25,0.0\n003_HC,6.3,1.0,0.0\n004_HC,,,\n"
    )
    assert [c.case for c in read_edge_cases(cases)] == ["001_HC", "002_HC", "003_HC"]  # unmeasured frames left out
    assert main([str(cases)]) == 0
    assert "  003_HC: HC error +6.30 mm" in capsys.readouterr().out


def test_a_cases_file_without_the_offsets_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text("case,reference_hc_mm,hc_mm,df_mm\n001_HC,170.0,171.0,1.0\n")
    assert main([str(cases)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(cases) in error and "reference_to_skull_edge_mm" in error
