"""Results into the MRML scene: segmentation node with terminology, biometry table, measurement markups.

Every function takes the scene explicitly, so it runs in Slicer and, for tests, with the ``slicer-core`` wheel
(real MRML without the application). Values come from the worker's outputs; Slicer recomputes the markups'
lengths and angles itself, so the user can adjust the calipers and see the values update.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PROVENANCE_ATTRIBUTES = ("model_id", "model_version", "model_sha256", "device", "seconds")


def _vtk_image(array_xyz: np.ndarray) -> Any:
    import vtk
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(*array_xyz.shape)
    flat = np.ascontiguousarray(array_xyz.transpose(2, 1, 0)).ravel()  # VTK scalars run x fastest
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True))
    return image


def _vtk_matrix(matrix: np.ndarray) -> Any:
    import vtk

    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row, column]))
    return result


def import_segmentation(
    scene: Any,
    labels: np.ndarray,
    ijk_to_ras: np.ndarray,
    segments: list[dict[str, Any]],
    name: str,
    reference_volume: Any | None = None,
    provenance: dict[str, Any] | None = None,
    segmentation: Any | None = None,
    closed_surface: bool = True,
) -> Any:
    """A segmentation node made from a label map (X, Y, Z) on ``ijk_to_ras``.

    Args:
        segments: per label: ``value``, ``name``, ``color_rgb`` (0-255) and ``terminology_entry`` (or None),
            as in a model bundle's labels.
        reference_volume: the input volume: becomes the reference geometry (needed for DICOM SEG export).
        provenance: model id, version, SHA-256, device and seconds, stored as ``FetalHeadSeg.*`` attributes.
        segmentation: an existing segmentation node to fill (its segments are replaced); None creates one.
        closed_surface: also make the closed surface of volumes, so the 3D view shows them.
    """
    import slicer

    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{name} labels")
    labelmap.SetAndObserveImageData(_vtk_image(labels.astype(np.uint8)))
    labelmap.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras))
    if segmentation is None:
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.GetSegmentation().RemoveAllSegments()
    segmentation.CreateDefaultDisplayNodes()
    if reference_volume is not None:
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        segmentation.SetNodeReferenceID(segmentation.GetReferenceImageGeometryReferenceRole(), reference_volume.GetID())
    else:
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(labelmap)
    for segment_info in segments:
        value = int(segment_info["value"])
        single = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        single.SetAndObserveImageData(_vtk_image((labels == value).astype(np.uint8)))
        single.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras))
        before = segmentation.GetSegmentation().GetNumberOfSegments()
        slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(single, segmentation)
        scene.RemoveNode(single)
        if segmentation.GetSegmentation().GetNumberOfSegments() == before:
            segment_id = segmentation.GetSegmentation().AddEmptySegment(segment_info["name"])
        else:
            segment_id = segmentation.GetSegmentation().GetNthSegmentID(before)
        segment = segmentation.GetSegmentation().GetSegment(segment_id)
        segment.SetName(segment_info["name"])
        segment.SetColor(*(c / 255.0 for c in segment_info["color_rgb"]))
        if segment_info.get("terminology_entry"):
            segment.SetTag(segment.GetTerminologyEntryTagName(), segment_info["terminology_entry"])
    scene.RemoveNode(labelmap)
    if closed_surface and labels.shape[2] > 1:
        segmentation.CreateClosedSurfaceRepresentation()
    for key, value in (provenance or {}).items():
        segmentation.SetAttribute(f"FetalHeadSeg.{key}", str(value))
    return segmentation


def _rows(biometry: dict[str, Any]) -> list[tuple[str, Any, str, str, str]]:
    """(measurement, value, unit, method, convention) rows of a biometry JSON."""
    rows = [
        ("HC", biometry.get("hc_mm"), "mm", "Ramanujan I perimeter of the fitted ellipse", "outer skull"),
        ("BPD", biometry.get("bpd_mm"), "mm", "minor axis of the fitted ellipse", "outer-outer"),
        ("OFD", biometry.get("ofd_mm"), "mm", "major axis of the fitted ellipse", "outer-outer"),
        ("Cephalic index", biometry.get("cephalic_index"), "", "100 x BPD / OFD", ""),
    ]
    if biometry.get("bpd_outer_inner_mm") is not None:
        rows.append(("BPD", biometry["bpd_outer_inner_mm"], "mm", "outer to inner skull edge", "outer-inner"))
    if biometry.get("head_volume_ml") is not None:
        rows.append(("Head volume", biometry["head_volume_ml"], "mL", "voxel count x voxel volume", ""))
    estimate = (biometry.get("ga_weeks") or {}).get("intergrowth21_2016_hc") or {}
    if estimate:
        days = None if estimate.get("days") is None else round(estimate["days"], 1)
        rows.append(("GA from HC", days, "days", "INTERGROWTH-21st 2016", estimate.get("reason") or ""))
    hc_size = ((biometry.get("size_for_ga") or {}).get("hc")) or {}
    if hc_size:
        rows.append(("HC z-score", hc_size.get("z_score"), "", "INTERGROWTH-21st 2014", hc_size.get("reason") or ""))
        rows.append(("HC centile", hc_size.get("centile"), "%", "INTERGROWTH-21st 2014", ""))
    if biometry.get("aop_deg") is not None:
        rows.append(("Angle of progression", biometry["aop_deg"], "deg", "symphysis axis to head tangent", ""))
    return rows


def _text(value: Any) -> str:
    return "" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))


def _flags(biometry: dict[str, Any]) -> str:
    return "; ".join(flag["code"] for flag in biometry.get("flags", []))


def _table(scene: Any, name: str, headings: list[str], rows: list[list[str]]) -> Any:
    """A table node of text cells."""
    import vtk

    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = table_node.GetTable()
    for heading in headings:
        array = vtk.vtkStringArray()
        array.SetName(heading)
        table.AddColumn(array)
    for cells in rows:
        row = table.InsertNextBlankRow()
        for column, cell in enumerate(cells):
            table.SetValue(row, column, vtk.vtkVariant(cell))
    table_node.Modified()
    return table_node


def create_biometry_table(scene: Any, biometry: dict[str, Any], name: str) -> Any:
    """A table node with one row per measurement: measurement, value, unit, method, convention, flags."""
    headings = ["measurement", "value", "unit", "method", "convention", "flags"]
    flags = _flags(biometry)
    rows = [
        [measurement, _text(value), unit, method, convention, flags]
        for measurement, value, unit, method, convention in _rows(biometry)
    ]
    return _table(scene, name, headings, rows)


def _add_points(node: Any, points_ras: list[list[float]], labels: list[str] | None = None) -> None:
    import vtk

    for index, point in enumerate(points_ras):
        node.AddControlPoint(vtk.vtkVector3d(*point), labels[index] if labels else "")
    node.SetLocked(True)


def create_markups(scene: Any, biometry: dict[str, Any], prefix: str) -> dict[str, Any]:
    """BPD and OFD lines, the HC closed curve, the measurement plane (3D) and the AoP angle (intrapartum)."""
    landmarks = biometry.get("landmarks") or {}
    nodes: dict[str, Any] = {}
    if not landmarks:
        return nodes
    for key, kind in (("bpd", "BPD"), ("ofd", "OFD")):
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", f"{prefix} {kind}")
        _add_points(node, landmarks[key], [f"{kind}-1", f"{kind}-2"])
        nodes[kind] = node
    curve = scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", f"{prefix} HC")
    _add_points(curve, landmarks["hc_ellipse"])
    nodes["HC"] = curve
    plane_info = biometry.get("plane") or {}
    if biometry.get("dimension") == 3 and plane_info:
        plane = scene.AddNewNodeByClass("vtkMRMLMarkupsPlaneNode", f"{prefix} measurement plane")
        plane.SetOrigin(*plane_info["origin_ras"])
        plane.SetNormal(*plane_info["normal_ras"])
        plane.SetLocked(True)
        nodes["plane"] = plane
    aop = biometry.get("aop") or {}
    if aop:
        angle = scene.AddNewNodeByClass("vtkMRMLMarkupsAngleNode", f"{prefix} AoP")
        _add_points(
            angle, [aop["symphysis_superior_ras"], aop["symphysis_apex_ras"], aop["head_tangent_ras"]], ["S", "V", "T"]
        )
        nodes["AoP"] = angle
    return nodes


def create_frame_table(scene: Any, frames: list[tuple[str, dict[str, Any]]], index_name: str, name: str) -> Any:
    """A table node with one row per frame of a sequence: the frame's index value, then one column per
    measurement (named with its unit and convention where two share a name), then the frame's flags.

    Args:
        frames: (index value, biometry JSON) per frame, in sequence order.
        index_name: heading of the first column, e.g. ``time (s)``.
    """
    units: dict[tuple[str, str], str] = {}  # column (measurement, convention) -> unit, in first-seen order
    per_frame = []
    for _, biometry in frames:
        values = {}
        for measurement, value, unit, _method, convention in _rows(biometry):
            key = (measurement, convention if measurement == "BPD" else "")  # BPD comes outer-outer and outer-inner
            units.setdefault(key, unit)
            values[key] = value
        per_frame.append(values)
    headings = [index_name]
    for key, unit in units.items():
        label = " ".join(key).strip()
        headings.append(f"{label} ({unit})" if unit else label)
    rows = [
        [index_value, *(_text(values.get(key)) for key in units), _flags(biometry)]
        for (index_value, biometry), values in zip(frames, per_frame, strict=True)
    ]
    return _table(scene, name, [*headings, "flags"], rows)
