"""Results into a real MRML scene (the slicer-core wheel: Slicer's MRML without the application)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from FetalHeadSegLib.aop import angle_of_progression
from FetalHeadSegLib.biometry import measure_biometry
from FetalHeadSegLib.io import read_image
from FetalHeadSegLib.labels import HEAD
from FetalHeadSegLib.samples import get_sample

from shapes import intrapartum_labels

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("this 'slicer' is not Slicer's MRML (install slicer-core)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FetalHeadSeg"))
from FetalHeadSegSlicer.scene import create_biometry_table, create_markups, import_segmentation  # noqa: E402

HEAD_SEGMENT = {"value": 1, "name": HEAD.name, "color_rgb": HEAD.color_rgb, "terminology_entry": HEAD.terminology_entry}


@pytest.fixture
def scene():
    from slicer import vtkSegmentationConverterFactory

    factory = vtkSegmentationConverterFactory.GetInstance()
    for rule in (
        "vtkBinaryLabelmapToClosedSurfaceConversionRule",
        "vtkClosedSurfaceToBinaryLabelmapConversionRule",
        "vtkClosedSurfaceToFractionalLabelmapConversionRule",
        "vtkFractionalLabelmapToClosedSurfaceConversionRule",
    ):
        factory.RegisterConverterRule(getattr(slicer, rule)())
    return slicer.vtkMRMLScene()


def test_label_map_becomes_a_segmentation_with_terminology(scene) -> None:
    from vtk.util import numpy_support

    mask = read_image(get_sample("phantom3d_s000001").annotation_path)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "phantom")
    from FetalHeadSegSlicer.scene import _vtk_image, _vtk_matrix

    volume.SetAndObserveImageData(_vtk_image(mask.array))
    volume.SetIJKToRASMatrix(_vtk_matrix(mask.ijk_to_ras))
    node = import_segmentation(
        scene,
        mask.array,
        mask.ijk_to_ras,
        [HEAD_SEGMENT],
        "phantom fetal head",
        volume,
        {"model_id": "fetal-head-3d-cascade", "device": "cpu"},
    )
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetSegment(segmentation.GetNthSegmentID(0))
    assert segment.GetName() == "Head"
    import vtk

    reference = vtk.reference("")
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), reference)
    tag = str(reference)
    assert "SCT^69536005^Head" in tag and len(tag.split("~")) == 7
    assert node.GetAttribute("FetalHeadSeg.model_id") == "fetal-head-3d-cascade"
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) == volume.GetID()
    surface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    assert segmentation.ContainsRepresentation(surface)  # shown in 3D
    assert segment.GetRepresentation(surface).GetNumberOfPoints() > 100
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    extent = slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
    slicer.vtkSlicerSegmentationsModuleLogic.ExportAllSegmentsToLabelmapNode(node, exported, extent)
    dims = exported.GetImageData().GetDimensions()
    values = numpy_support.vtk_to_numpy(exported.GetImageData().GetPointData().GetScalars())
    back = values.reshape(dims[2], dims[1], dims[0]).transpose(2, 1, 0)
    np.testing.assert_array_equal(back > 0, mask.array > 0)


def test_markups_lengths_are_the_library_measurements(scene) -> None:
    mask = read_image(get_sample("phantom3d_s000001").annotation_path)
    biometry = measure_biometry(mask).to_dict()
    nodes = create_markups(scene, biometry, "phantom")
    assert set(nodes) == {"BPD", "OFD", "HC", "plane"}
    assert nodes["BPD"].GetLineLengthWorld() == pytest.approx(biometry["bpd_mm"], abs=1e-3)
    assert nodes["OFD"].GetLineLengthWorld() == pytest.approx(biometry["ofd_mm"], abs=1e-3)
    assert nodes["HC"].GetCurveLengthWorld() == pytest.approx(biometry["hc_mm"], rel=0.005)
    assert nodes["BPD"].GetLocked()
    normal = [0.0, 0.0, 0.0]
    nodes["plane"].GetNormal(normal)
    assert abs(np.dot(normal, biometry["plane"]["normal_ras"])) == pytest.approx(1.0, abs=1e-6)


def test_aop_angle_markup_and_biometry_table(scene) -> None:
    labels = intrapartum_labels()
    head = labels.with_array((labels.array == 2).astype(np.uint8))
    biometry = measure_biometry(head, ga_weeks=39.0).with_aop(angle_of_progression(labels)).to_dict()
    nodes = create_markups(scene, biometry, "frame")
    assert nodes["AoP"].GetAngleDegrees() == pytest.approx(biometry["aop"]["aop_deg"], abs=1e-3)
    table = create_biometry_table(scene, biometry, "frame biometrics").GetTable()
    rows = {table.GetValue(r, 0).ToString(): table.GetValue(r, 1).ToString() for r in range(table.GetNumberOfRows())}
    assert float(rows["HC"]) == pytest.approx(biometry["hc_mm"], abs=0.01)
    assert float(rows["Angle of progression"]) == pytest.approx(biometry["aop_deg"], abs=0.01)
    assert "HC z-score" in rows
    columns = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert columns == ["measurement", "value", "unit", "method", "convention", "flags"]
