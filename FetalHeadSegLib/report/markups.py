"""Slicer markups JSON (``.mrk.json``) for the biometry landmarks: BPD/OFD lines, HC curve, plane, AoP angle.

Files follow Slicer's markups schema v1.0.3. Coordinates are written in LPS, as Slicer itself writes them.
Slicer recomputes each markup's measurements (line length, curve length, angle) from the control points.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from FetalHeadSegLib.core.atomic import atomic_output_dir
from FetalHeadSegLib.measure.biometry import Biometry

MARKUPS_SCHEMA_URL = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
_LPS_FROM_RAS = np.array([-1.0, -1.0, 1.0])


def _control_points(points_ras: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "id": str(index + 1),
            "label": label,
            "position": np.round(point * _LPS_FROM_RAS, 4).tolist(),
            "locked": True,
            "positionStatus": "defined",
        }
        for index, (point, label) in enumerate(zip(points_ras, labels, strict=True))
    ]


def _markup(
    kind: str,
    name: str,
    points_ras: np.ndarray,
    labels: list[str],
    measurement: dict[str, Any],
    color: tuple[float, float, float],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": kind,
        "name": name,
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": True,
        "fixedNumberOfControlPoints": True,
        "labelFormat": "%N-%d",
        "controlPoints": _control_points(points_ras, labels),
        "measurements": [{**measurement, "enabled": True, "printFormat": "%-#4.4g%s"}],
        "display": {
            "visibility": True,
            "color": list(color),
            "selectedColor": list(color),
            "propertiesLabelVisibility": True,
        },
        **extra,
    }


def _plane_base_to_node(x_axis_ras: np.ndarray, normal_ras: np.ndarray, origin_ras: np.ndarray) -> list[float]:
    """A plane's ``baseToNode`` matrix (16 values, row-major), which Slicer's plane reader places it by.

    The reader turns a matrix of an LPS file into RAS as ``D @ M @ D`` (D = diag(-1, -1, 1, 1): both the node's
    and the plane's own frame change), so the file holds ``D @ M_ras @ D`` where ``M_ras``'s columns are the plane's
    x axis (OFD), y axis (normal x x_axis), normal and origin in RAS. Checked with slicer-core's
    ``vtkSlicerMarkupsLogic.LoadMarkups`` (Testing/slicer_module/test_slicer_scene.py).
    """
    x = np.asarray(x_axis_ras, dtype=np.float64)
    z = np.asarray(normal_ras, dtype=np.float64)
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2] = x, np.cross(z, x), z
    matrix[:3, 3] = np.asarray(origin_ras, dtype=np.float64)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return [round(float(v), 6) for v in (flip @ matrix @ flip).ravel()]


def biometry_markups(biometry: Biometry) -> dict[str, dict[str, Any]]:
    """Markups documents keyed by short name (``BPD``, ``OFD``, ``HC``, ``plane``, ``AoP``)."""
    landmarks = biometry.landmarks
    documents = {
        "BPD": _markup(
            "Line",
            "BPD",
            landmarks.bpd_ras,
            ["BPD-1", "BPD-2"],
            {"name": "length", "value": round(biometry.bpd_mm, 3), "units": "mm"},
            (0.2, 0.8, 0.2),
        ),
        "OFD": _markup(
            "Line",
            "OFD",
            landmarks.ofd_ras,
            ["OFD-1", "OFD-2"],
            {"name": "length", "value": round(biometry.ofd_mm, 3), "units": "mm"},
            (0.2, 0.6, 1.0),
        ),
        "HC": _markup(
            "ClosedCurve",
            "HC",
            landmarks.hc_ellipse_ras,
            [""] * len(landmarks.hc_ellipse_ras),
            {"name": "length", "value": round(biometry.hc_mm, 3), "units": "mm"},
            (1.0, 0.8, 0.2),
        ),
    }
    if biometry.dimension == 3:
        plane = biometry.plane
        documents["plane"] = _markup(
            "Plane",
            "Measurement plane",
            plane.origin_ras[np.newaxis],
            ["plane"],
            {"name": "area", "value": round(biometry.ellipse.area, 3), "units": "mm2"},
            (0.9, 0.3, 0.9),
            planeType="PointNormal",
            normal=np.round(plane.normal_ras * _LPS_FROM_RAS, 6).tolist(),
            objectToBase=np.eye(4).ravel().tolist(),
            baseToNode=_plane_base_to_node(plane.ofd_axis_ras, plane.normal_ras, plane.origin_ras),
            size=[round(2.4 * biometry.ellipse.semi_major, 3)] * 2 + [0.0],
            sizeMode="absolute",
        )
    if biometry.aop is not None:
        aop = biometry.aop
        documents["AoP"] = _markup(
            "Angle",
            "AoP",
            np.stack([aop.s_ras, aop.v_ras, aop.t_ras]),
            ["S", "V", "T"],
            {"name": "angle", "value": round(aop.aop_deg, 3), "units": "deg"},
            (1.0, 0.3, 0.3),
        )
    return {key: {"@schema": MARKUPS_SCHEMA_URL, "markups": [document]} for key, document in documents.items()}


def write_markups(biometry: Biometry, output_dir: str | os.PathLike[str], stem: str) -> list[Path]:
    """Write ``<stem>_<name>.mrk.json`` files for every landmark set, atomically; return their paths."""
    directory = Path(output_dir)
    with atomic_output_dir(directory) as staging:
        names = [f"{stem}_{key}.mrk.json" for key in biometry_markups(biometry)]
        for name, document in zip(names, biometry_markups(biometry).values(), strict=True):
            (staging / name).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return [directory / name for name in names]
