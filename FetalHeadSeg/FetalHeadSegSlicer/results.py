"""The worker's output files into the scene, read by Slicer's own loaders.

The library writes each case as a ``.seg.nrrd`` (segment names, colours and DICOM terminology), one ``.mrk.json``
per landmark set and a biometry JSON. ``slicer.util.loadSegmentation`` and ``slicer.util.loadMarkups`` read the
first two as Slicer reads any such file; the biometry JSON becomes a table (``scene.py``). :func:`import_results`
imports a single run and a run over every frame of a sequence.

Two rules of the scene are kept here:

- the worker read the volume without its parent transforms, so its RAS is the volume's local frame: every result
  goes under the volume's parent transform and moves with it;
- a frame the worker could not segment has no item in the segmentation sequence, and the browser shows it empty
  (not the previous frame's head).

Slicer is imported inside the functions: the module's tests replace it per test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKUP_TITLES = {"BPD": "BPD", "OFD": "OFD", "HC": "HC", "plane": "measurement plane", "AoP": "AoP"}
"""Node name suffix of each markups file the library writes (``<stem>_<key>.mrk.json``)."""


@dataclass
class SequenceFrames:
    """The frames of a sequence sent to the worker: its browser, the sequence, and the file of each frame."""

    browser: Any  # vtkMRMLSequenceBrowserNode
    sequence: Any  # vtkMRMLSequenceNode of the input volumes
    files: dict[str, int] = field(default_factory=dict)  # file name written for the worker -> index in the sequence


@dataclass
class ImportedResults:
    """What one run added to the scene.

    Attributes:
        segmentation: the segmentation node; for a sequence, the browser's proxy node of the segmentation sequence.
        device: the device the worker ran on (single runs).
        table: the biometry table (one row per measurement, or per frame for a sequence); None when not measured.
        markups: BPD, OFD and HC markups, the measurement plane (3D) and the AoP angle (intrapartum), by key.
        sequence: the segmentation sequence (runs over every frame).
        frames: the number of frames segmented (runs over every frame).
        plane: the measurement plane in world RAS (``origin_ras``, ``normal_ras``, ``ofd_axis_ras``), for the view.
    """

    segmentation: Any
    device: str = ""
    table: Any | None = None
    markups: dict[str, Any] = field(default_factory=dict)
    sequence: Any | None = None
    frames: int = 0
    plane: dict[str, Any] | None = None


def import_results(
    scene: Any,
    volume: Any,
    results: list[dict[str, Any]],
    frames: SequenceFrames | None = None,
    output_segmentation: Any | None = None,
    create_markups: bool = True,
) -> ImportedResults:
    """Load the files of the worker's ``result`` events and place them beside ``volume``.

    Args:
        scene: the scene ``slicer.util``'s loaders load into (``slicer.mrmlScene``).
        volume: the input volume (for a sequence, its proxy node).
        results: the worker's ``result`` events: one for a single run, one per segmented frame otherwise.
        frames: the sequence the frames came from; None for a single run.
        output_segmentation: a segmentation node to fill (its segments are replaced); None makes a new one.
        create_markups: load the worker's markups files (single runs).

    Raises:
        RuntimeError: Slicer could not read a file (the loaders' error).
    """
    if frames is not None:
        return _import_sequence(scene, volume, results, frames)
    name = volume.GetName()
    outputs = results[-1]["outputs"]
    segmentation, record = _load_case(scene, outputs, f"{name} fetal head")
    if output_segmentation is not None:
        segmentation = _move_into(scene, segmentation, output_segmentation)
    segmentation.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)  # also the DICOM SEG export's reference
    segmentation.CreateDefaultDisplayNodes()
    if volume.GetImageData() is not None and volume.GetImageData().GetDimensions()[2] > 1:
        segmentation.CreateClosedSurfaceRepresentation()  # shown in 3D at once
    imported = ImportedResults(segmentation, device=str(record.get("provenance", {}).get("device", "")))
    study = _study_item(scene, volume)
    _place_in_hierarchy(scene, study, [segmentation])
    if record.get("hc_mm") is None:
        return imported
    from FetalHeadSegSlicer.scene import create_biometry_table

    imported.table = create_biometry_table(scene, record, f"{name} biometrics")
    if create_markups:
        imported.markups = _load_markups(scene, outputs, record, name, volume.GetTransformNodeID())
    hierarchy = _hierarchy(scene)
    folder = hierarchy.CreateFolderItem(study, f"{name} biometry")
    _place_in_hierarchy(scene, folder, [imported.table, *imported.markups.values()])
    imported.plane = _plane_in_world(record.get("plane"), volume)
    return imported


def _import_sequence(scene: Any, volume: Any, results: list[dict[str, Any]], frames: SequenceFrames) -> ImportedResults:
    """A segmentation sequence in the input's browser and a table with one row per measured frame."""
    import slicer

    from FetalHeadSegSlicer.scene import create_frame_table

    name = volume.GetName()
    source = frames.sequence
    output = scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{name} fetal head sequence")
    output.SetIndexName(source.GetIndexName())
    output.SetIndexUnit(source.GetIndexUnit())
    output.SetIndexType(source.GetIndexType())
    rows = []
    for event in sorted(results, key=lambda e: frames.files[Path(e["input"]).name]):
        index_value = source.GetNthIndexValue(frames.files[Path(event["input"]).name])
        segmentation, record = _load_case(scene, event["outputs"], f"{name} fetal head {index_value}")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        _remove_display_nodes(scene, segmentation)  # the proxy gets its own; the scene would keep these
        output.SetDataNodeAtValue(segmentation, index_value)  # the sequence keeps a copy
        scene.RemoveNode(segmentation)
        if record.get("hc_mm") is not None:
            rows.append((index_value, record))
    browser = frames.browser
    browser.AddSynchronizedSequenceNode(output)
    # A frame without a segmentation gets an empty one: Slicer's default (MissingItemCreateFromPrevious) would
    # copy the previous frame's head into it, and save that copy (vtkSlicerSequencesLogic.cxx).
    browser.SetMissingItemMode(output, slicer.vtkMRMLSequenceBrowserNode.MissingItemCreateFromDefault)
    browser.SetSaveChanges(output, True)  # corrections made on the shown frame are kept
    slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(output)
    if proxy is not None:
        proxy.SetName(f"{name} fetal head")
        proxy.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
    imported = ImportedResults(proxy, sequence=output, frames=len(results))
    unit = source.GetIndexUnit()
    heading = f"{source.GetIndexName()} ({unit})" if unit else source.GetIndexName()
    if rows:
        imported.table = create_frame_table(scene, rows, heading, f"{name} biometrics per frame")
    _place_in_hierarchy(scene, _study_item(scene, volume), [output, *([imported.table] if rows else [])])
    return imported


def _load_case(scene: Any, outputs: dict[str, str], name: str) -> tuple[Any, dict[str, Any]]:
    """The case's segmentation node, read by Slicer from the worker's ``.seg.nrrd``, and its biometry record."""
    import slicer

    record = json.loads(Path(outputs["biometry"]).read_text(encoding="utf-8")) if outputs.get("biometry") else {}
    segmentation = slicer.util.loadSegmentation(outputs["labels"], {"name": name})
    _forget_file(scene, segmentation)
    for key, value in record.get("provenance", {}).items():
        segmentation.SetAttribute(f"FetalHeadSeg.{key}", str(value))
    return segmentation, record


def _load_markups(
    scene: Any, outputs: dict[str, str], record: dict[str, Any], prefix: str, transform_node_id: str | None
) -> dict[str, Any]:
    """The worker's markups files, as Slicer reads them, under the volume's parent transform."""
    import slicer

    nodes = {}
    for key, title in MARKUP_TITLES.items():
        path = outputs.get(f"markups_{key}")
        if not path:
            continue
        node = slicer.util.loadMarkups(path)
        _forget_file(scene, node)
        node.SetName(f"{prefix} {title}")
        node.SetAndObserveTransformNodeID(transform_node_id)
        nodes[key] = node
    if "HC" in nodes and nodes["HC"].GetDisplayNode() is not None:  # 64 points: their labels would crowd the head
        nodes["HC"].GetDisplayNode().SetPointLabelsVisibility(False)
    return nodes


def _forget_file(scene: Any, node: Any) -> None:
    """Detach ``node`` from the worker's file: that file goes with the temporary folder, so the node is saved
    like one made in this session."""
    storage = node.GetStorageNode()
    if storage is not None:
        node.SetAndObserveStorageNodeID(None)
        scene.RemoveNode(storage)


def _move_into(scene: Any, loaded: Any, target: Any) -> Any:
    """Replace the segments and attributes of ``target`` with those of ``loaded``; ``loaded`` leaves the scene."""
    target.GetSegmentation().DeepCopy(loaded.GetSegmentation())
    for name in loaded.GetAttributeNames() or ():
        target.SetAttribute(name, loaded.GetAttribute(name))
    _remove_display_nodes(scene, loaded)
    scene.RemoveNode(loaded)
    return target


def _remove_display_nodes(scene: Any, node: Any) -> None:
    for display in [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]:
        if display is not None:
            scene.RemoveNode(display)


def show_plane(scene: Any, plane: dict[str, Any]) -> None:
    """Show the measurement plane (world RAS) in the red slice view, when the layout has one."""
    slice_node = scene.GetNodeByID("vtkMRMLSliceNodeRed")
    if slice_node is None:  # no main window, or a layout without the red view
        return
    slice_node.SetSliceToRASByNTP(*plane["normal_ras"], *plane["ofd_axis_ras"], *plane["origin_ras"], 0)


def _plane_in_world(plane: dict[str, Any] | None, volume: Any) -> dict[str, Any] | None:
    """The measurement plane (origin, normal, OFD axis) moved by the volume's parent transforms, if any."""
    import slicer
    import vtk

    if not plane:
        return None
    to_world = vtk.vtkMatrix4x4()
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(volume.GetParentTransformNode(), None, to_world)
    origin = to_world.MultiplyPoint([*plane["origin_ras"], 1.0])[:3]
    normal = to_world.MultiplyPoint([*plane["normal_ras"], 0.0])[:3]
    axis = to_world.MultiplyPoint([*plane["ofd_axis_ras"], 0.0])[:3]
    return {**plane, "origin_ras": list(origin), "normal_ras": list(normal), "ofd_axis_ras": list(axis)}


def _hierarchy(scene: Any) -> Any:
    import slicer

    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def _study_item(scene: Any, volume: Any) -> int:
    """The subject hierarchy item holding the input volume (its study), else the scene."""
    hierarchy = _hierarchy(scene)
    item = hierarchy.GetItemByDataNode(volume)
    if item == hierarchy.GetInvalidItemID():
        return int(hierarchy.GetSceneItemID())
    return int(hierarchy.GetItemParent(item))


def _place_in_hierarchy(scene: Any, parent_item: int, nodes: list[Any]) -> None:
    hierarchy = _hierarchy(scene)
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item == hierarchy.GetInvalidItemID():  # no subject hierarchy plugins (scripts, tests): add the item
            hierarchy.CreateItem(parent_item, node)
        else:
            hierarchy.SetItemParent(item, parent_item)
