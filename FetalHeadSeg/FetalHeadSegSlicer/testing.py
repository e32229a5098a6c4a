"""The module's self-test: the panel's Apply on a volume, checked in the scene (:func:`apply_and_check`), and a
stand-in worker for where torch is not installed: same protocol, same output files, made from the bundled phantom's
exact head mask instead of a network (so the Slicer side is fully exercised)."""

from __future__ import annotations

import json
import time
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any

from FetalHeadSegSlicer.runner import WorkerState


class TruthMaskWorker:
    """Writes ``<stem>.seg.nrrd``, ``<stem>_biometry.json`` and the markups files from a known mask and reports like
    the worker; reads its command line with the command line's own parser."""

    def __init__(self, mask_path: Path) -> None:
        self.mask_path = mask_path

    def __call__(
        self,
        command: list[str],
        environment: dict[str, str] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> TruthMaskWorker:
        from FetalHeadSegLib.cli import build_parser
        from FetalHeadSegLib.core.io import read_image
        from FetalHeadSegLib.core.labels import HEAD
        from FetalHeadSegLib.inference.request import SegmentRequest
        from FetalHeadSegLib.measure.biometry import measure_biometry
        from FetalHeadSegLib.report.cohort import image_stem
        from FetalHeadSegLib.report.markups import write_markups
        from FetalHeadSegLib.report.segfile import write_seg_nrrd

        self.state = WorkerState()
        self.returncode = 0
        self.finished = True  # everything below is reported before this returns
        request = SegmentRequest.from_namespace(build_parser().parse_args(command[3:]))  # the worker's own parser
        source, output = Path(request.inputs[0]), request.output
        mask = read_image(self.mask_path)
        stem = image_stem(source)
        labels = write_seg_nrrd(mask, [HEAD], output / f"{stem}.seg.nrrd")
        measured = measure_biometry(mask)
        record = {
            "input": str(source),
            **measured.to_dict(),
            "provenance": {
                "model_id": "truth-mask (self-test)",
                "model_version": "0",
                "model_sha256": "",
                "device": "cpu",
                "seconds": 0.0,
            },
        }
        biometry = output / f"{stem}_biometry.json"
        biometry.write_text(json.dumps(record))
        outputs = {"labels": str(labels), "biometry": str(biometry)}
        for path in write_markups(measured, output, stem):  # <stem>_<key>.mrk.json
            outputs[f"markups_{path.name[len(stem) + 1 : -len('.mrk.json')]}"] = str(path)
        events: list[dict[str, Any]] = [
            {"event": "start", "input": str(source), "model_id": "truth-mask (self-test)"},
            {"event": "progress", "input": str(source), "stage": "stage1", "fraction": 1.0, "message": ""},
            {
                "event": "result",
                "input": str(source),
                "outputs": outputs,
                "seconds": 0.0,
            },
            {"event": "done", "succeeded": 1, "failed": 0},
        ]
        for event in events:
            self.state.events.append(event)
            if event["event"] == "result":
                self.state.result = event
            if on_event is not None:
                on_event(event)
        return self

    def poll(self) -> WorkerState:
        return self.state

    def wait(self, timeout: float | None = None) -> WorkerState:
        return self.state

    def cancel(self) -> None:
        pass


def apply_and_check(test: unittest.TestCase, widget: Any, volume: Any, timeout_s: float = 600.0) -> None:
    """Press the panel's Apply on ``volume`` (on the CPU) as a user would, let the event loop turn until the run is
    over, and check what lands in the scene: one "Head" segment with its SNOMED CT tag, the biometry table, and a
    BPD line as long as the table says."""
    import slicer
    import vtk

    widget.initializeParameterNode()
    widget.ui.inputVolumeSelector.setCurrentNode(volume)
    widget.ui.deviceComboBox.currentIndex = widget.ui.deviceComboBox.findText("cpu")
    test.assertTrue(widget.ui.applyButton.enabled, "the panel's widgets are not bound to the parameter node")
    widget.ui.applyButton.click()
    task = widget._task
    test.assertIsNotNone(task, widget.ui.statusLabel.text)
    deadline = time.monotonic() + timeout_s
    while task.state == "running" and time.monotonic() < deadline:
        slicer.app.processEvents()  # the panel's timer polls the worker
        time.sleep(0.05)
    test.assertEqual(task.state, "done", task.message)
    test.assertIsNone(widget._task)
    test.assertEqual(widget.ui.applyButton.text, "Apply")
    results = task.results
    segmentation = results.segmentation.GetSegmentation()
    test.assertEqual(segmentation.GetNumberOfSegments(), 1)
    segment = segmentation.GetSegment(segmentation.GetNthSegmentID(0))
    test.assertEqual(segment.GetName(), "Head")
    tag = vtk.reference("")
    test.assertTrue(segment.GetTag(segment.GetTerminologyEntryTagName(), tag))
    test.assertIn("SCT^69536005^Head", str(tag))
    test.assertGreater(results.table.GetNumberOfRows(), 4)
    bpd = float(results.table.GetTable().GetValue(1, 1).ToString())
    test.assertAlmostEqual(results.markups["BPD"].GetLineLengthWorld(), bpd, delta=0.01)
