"""Slicer markups JSON: valid against Slicer's schema, and the control points reproduce the measurements."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from FetalHeadSegLib.measure.aop import angle_of_progression
from FetalHeadSegLib.measure.biometry import measure_biometry
from FetalHeadSegLib.report.markups import write_markups

from shapes import intrapartum_labels, make_ellipsoid, rotation_matrix

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "markups-schema-v1.0.3.json").read_text())


def load_markup(path: Path) -> dict:
    document = json.loads(path.read_text())
    jsonschema.validate(document, SCHEMA)
    (markup,) = document["markups"]
    return markup


def positions(markup: dict) -> np.ndarray:
    return np.array([point["position"] for point in markup["controlPoints"]])


def test_3d_markups_validate_and_match_the_measurements(tmp_path: Path) -> None:
    shape = make_ellipsoid((44.0, 35.0, 31.0), rotation=rotation_matrix((1, 1, 0), 0.5), spacing_mm=(0.9,) * 3)
    biometry = measure_biometry(shape.image)
    paths = write_markups(biometry, tmp_path, "case")
    assert sorted(p.name for p in paths) == [
        "case_BPD.mrk.json",
        "case_HC.mrk.json",
        "case_OFD.mrk.json",
        "case_plane.mrk.json",
    ]
    bpd = load_markup(tmp_path / "case_BPD.mrk.json")
    assert bpd["type"] == "Line" and bpd["coordinateSystem"] == "LPS"
    assert np.linalg.norm(np.diff(positions(bpd), axis=0)) == pytest.approx(biometry.bpd_mm, abs=1e-3)
    ofd = load_markup(tmp_path / "case_OFD.mrk.json")
    assert np.linalg.norm(np.diff(positions(ofd), axis=0)) == pytest.approx(biometry.ofd_mm, abs=1e-3)
    hc = load_markup(tmp_path / "case_HC.mrk.json")
    curve = positions(hc)
    polygon = np.linalg.norm(np.diff(np.vstack([curve, curve[:1]]), axis=0), axis=1).sum()
    assert hc["type"] == "ClosedCurve" and len(curve) == 64
    assert polygon == pytest.approx(biometry.hc_mm, rel=2e-3)  # a 64-gon inscribed in the ellipse
    # LPS in the file = RAS with x and y negated.
    np.testing.assert_allclose(positions(bpd), biometry.landmarks.bpd_ras * [-1, -1, 1], atol=1e-3)
    plane = load_markup(tmp_path / "case_plane.mrk.json")
    assert abs(np.dot(plane["normal"], biometry.plane.normal_ras * [-1, -1, 1])) == pytest.approx(1.0)


def test_aop_angle_markup(tmp_path: Path) -> None:
    labels = intrapartum_labels()
    head = labels.with_array((labels.array == 2).astype(np.uint8))
    biometry = measure_biometry(head).with_aop(angle_of_progression(labels))
    write_markups(biometry, tmp_path, "frame")
    angle = load_markup(tmp_path / "frame_AoP.mrk.json")
    s, v, t = positions(angle)
    cosine = np.dot(s - v, t - v) / np.linalg.norm(s - v) / np.linalg.norm(t - v)
    assert np.degrees(np.arccos(cosine)) == pytest.approx(biometry.aop.aop_deg, abs=1e-2)
    assert not (tmp_path / "frame_plane.mrk.json").exists()  # 2D frames have no separate plane
