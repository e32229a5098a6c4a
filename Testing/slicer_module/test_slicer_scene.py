"""The worker's files into a real MRML scene (the slicer-core wheel: Slicer's MRML without the application), read by
Slicer's own loaders as the module reads them (``FetalHeadSegSlicer/results.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import slicer_fakes

from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.core.io import read_image
from FetalHeadSegLib.core.labels import FETAL_HEAD, HEAD, PUBIC_SYMPHYSIS
from FetalHeadSegLib.core.samples import get_sample
from FetalHeadSegLib.measure.aop import angle_of_progression
from FetalHeadSegLib.measure.biometry import Biometry, measure_biometry
from FetalHeadSegLib.report.markups import write_markups
from FetalHeadSegLib.report.segfile import write_seg_nrrd

from shapes import intrapartum_labels

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("this 'slicer' is not Slicer's MRML (install slicer-core)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "FetalHeadSeg"))
from FetalHeadSegSlicer.results import import_results  # noqa: E402
from FetalHeadSegSlicer.scene import create_biometry_table  # noqa: E402

PROVENANCE = {"model_id": "fetal-head-3d-cascade", "device": "cpu"}


@pytest.fixture
def scene(monkeypatch: pytest.MonkeyPatch) -> Any:
    from slicer import vtkSegmentationConverterFactory

    factory = vtkSegmentationConverterFactory.GetInstance()
    for rule in (
        "vtkBinaryLabelmapToClosedSurfaceConversionRule",
        "vtkClosedSurfaceToBinaryLabelmapConversionRule",
        "vtkClosedSurfaceToFractionalLabelmapConversionRule",
        "vtkFractionalLabelmapToClosedSurfaceConversionRule",
    ):
        factory.RegisterConverterRule(getattr(slicer, rule)())
    scene = slicer.vtkMRMLScene()
    load_segmentation, load_markups = slicer_fakes.loaders(scene)
    monkeypatch.setattr(slicer.util, "loadSegmentation", load_segmentation, raising=False)
    monkeypatch.setattr(slicer.util, "loadMarkups", load_markups, raising=False)
    return scene


def _volume(scene: Any, image: Image, name: str) -> Any:
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    volume.SetAndObserveImageData(slicer_fakes.vtk_image(image.array.astype(np.float32)))
    volume.SetIJKToRASMatrix(slicer_fakes.vtk_matrix(image.ijk_to_ras))
    return volume


def _worker_result(folder: Path, labels: Image, biometry: Biometry, segments: list[Any]) -> dict[str, Any]:
    """The files and the ``result`` event the worker writes for one case (``outputs.write_outputs``'s names)."""
    folder.mkdir(exist_ok=True)
    outputs = {"labels": str(write_seg_nrrd(labels, segments, folder / "case.seg.nrrd"))}
    record = {"input": "case.nrrd", **biometry.to_dict(), "provenance": PROVENANCE}
    (folder / "case_biometry.json").write_text(json.dumps(record))
    outputs["biometry"] = str(folder / "case_biometry.json")
    for path in write_markups(biometry, folder, "case"):
        outputs[f"markups_{path.name.removeprefix('case_').removesuffix('.mrk.json')}"] = str(path)
    return {"event": "result", "input": "case.nrrd", "outputs": outputs, "seconds": 1.0}


def test_the_workers_segmentation_file_becomes_a_segmentation_with_terminology(scene: Any, tmp_path: Path) -> None:
    from vtk.util import numpy_support

    mask = read_image(get_sample("phantom3d_s000001").annotation_path)
    volume = _volume(scene, mask, "phantom")
    result = _worker_result(tmp_path / "out", mask, measure_biometry(mask), [HEAD])
    earlier = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "an earlier run")
    earlier.GetSegmentation().AddEmptySegment("old")
    imported = import_results(scene, volume, [result], output_segmentation=earlier)
    node = imported.segmentation
    assert node is earlier and imported.device == "cpu"  # the output node is filled: its old segments go
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    assert node.GetStorageNode() is None  # the worker's file is deleted with the temporary folder
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetSegment(segmentation.GetNthSegmentID(0))
    assert segment.GetName() == "Head"
    assert segment.GetColor() == pytest.approx([c / 255 for c in HEAD.color_rgb], abs=1e-4)
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


def test_markups_lengths_are_the_library_measurements(scene: Any, tmp_path: Path) -> None:
    mask = read_image(get_sample("phantom3d_s000001").annotation_path)
    measured = measure_biometry(mask)
    biometry = measured.to_dict()
    imported = import_results(
        scene, _volume(scene, mask, "phantom"), [_worker_result(tmp_path, mask, measured, [HEAD])]
    )
    nodes = imported.markups
    assert set(nodes) == {"BPD", "OFD", "HC", "plane"}
    assert nodes["BPD"].GetName() == "phantom BPD" and nodes["plane"].GetName() == "phantom measurement plane"
    assert nodes["BPD"].GetLineLengthWorld() == pytest.approx(biometry["bpd_mm"], abs=1e-3)
    assert nodes["OFD"].GetLineLengthWorld() == pytest.approx(biometry["ofd_mm"], abs=1e-3)
    assert nodes["HC"].GetCurveLengthWorld() == pytest.approx(biometry["hc_mm"], rel=0.005)
    assert nodes["BPD"].GetLocked()
    assert not nodes["HC"].GetDisplayNode().GetPointLabelsVisibility()  # 64 labels would crowd the head
    assert all(node.GetStorageNode() is None for node in nodes.values())
    normal, origin = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    nodes["plane"].GetNormal(normal)
    nodes["plane"].GetOrigin(origin)
    assert abs(np.dot(normal, biometry["plane"]["normal_ras"])) == pytest.approx(1.0, abs=1e-6)
    assert origin == pytest.approx(biometry["plane"]["origin_ras"], abs=1e-3)
    x_axis, y_axis, z_axis = [0.0] * 3, [0.0] * 3, [0.0] * 3
    nodes["plane"].GetAxesWorld(x_axis, y_axis, z_axis)  # placed by the file itself (its baseToNode), in RAS
    assert x_axis == pytest.approx(biometry["plane"]["ofd_axis_ras"], abs=1e-4)
    assert imported.plane is not None and imported.plane["origin_ras"] == pytest.approx(origin, abs=1e-3)


def test_aop_angle_markup_and_biometry_table(scene: Any, tmp_path: Path) -> None:
    labels = intrapartum_labels()
    head = labels.with_array((labels.array == 2).astype(np.uint8))
    measured = measure_biometry(head, ga_weeks=39.0).with_aop(angle_of_progression(labels))
    biometry = measured.to_dict()
    result = _worker_result(tmp_path, labels, measured, [PUBIC_SYMPHYSIS, FETAL_HEAD])
    imported = import_results(scene, _volume(scene, labels, "frame"), [result])
    segmentation = imported.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == [PUBIC_SYMPHYSIS.name, FETAL_HEAD.name]
    nodes = imported.markups
    assert set(nodes) == {"BPD", "OFD", "HC", "AoP"}  # a 2D frame has no measurement plane
    assert nodes["AoP"].GetAngleDegrees() == pytest.approx(biometry["aop"]["aop_deg"], abs=1e-3)
    table = imported.table.GetTable()
    assert imported.table.GetName() == "frame biometrics"
    rows = {table.GetValue(r, 0).ToString(): table.GetValue(r, 1).ToString() for r in range(table.GetNumberOfRows())}
    assert float(rows["HC"]) == pytest.approx(biometry["hc_mm"], abs=0.01)
    assert float(rows["Angle of progression"]) == pytest.approx(biometry["aop_deg"], abs=0.01)
    assert "HC z-score" in rows
    columns = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert columns == ["measurement", "value", "unit", "method", "convention", "flags"]
    direct = create_biometry_table(scene, biometry, "again").GetTable()  # the table is the record's, row for row
    assert direct.GetNumberOfRows() == table.GetNumberOfRows()
