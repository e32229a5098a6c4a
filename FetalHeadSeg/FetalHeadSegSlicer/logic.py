"""A segmentation run from Slicer: the input goes to a worker process, a Qt timer polls it, its files are imported.

One :class:`SegmentationTask` follows a run from start to end; its ``state`` goes from ``running`` to ``done``,
``failed`` or ``cancelled``. A failure takes one channel: the task's ``state`` and ``message``, and a ``failed``
event to the caller's callback. Nothing is raised from the timer's poll, where no caller would see it (and the
task would stay ``running``).

Slicer and Qt are imported inside the functions: the module's tests replace them per test.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from FetalHeadSegLib.inference.request import SegmentRequest

from FetalHeadSegSlicer.results import ImportedResults, SequenceFrames, import_results
from FetalHeadSegSlicer.runner import worker_command

logger = logging.getLogger(__name__)

Event = dict[str, Any]
EventCallback = Callable[[Event], None]
WorkerFactory = Callable[..., Any]
"""``factory(command, environment, on_event=...)``: a worker with ``poll``, ``wait``, ``cancel``, ``returncode``,
``finished`` and ``state`` (``runner.WorkerProcess``, or a stand-in such as ``testing.TruthMaskWorker``)."""

POLL_INTERVAL_MS = 200


def _(text: str) -> str:
    """Slicer's translation of ``text`` (in Slicer's language)."""
    from slicer.i18n import tr

    return str(tr(text))


class TaskState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TEST_TIME_FLIPS = {"auto": None, "on": True, "off": False}
"""The panel's test-time flips choice (``FetalHeadSegParameterNode.testTimeFlips``) as ``RunOptions.tta``."""


@dataclass(frozen=True)
class RunOptions:
    """What the panel asks for.

    Attributes:
        model: model id or bundle folder; empty: the installed default for the input's dimension.
        device: the panel's ``auto``, ``cpu`` or ``gpu`` (see :meth:`worker_device`), or any library device.
        compute_biometry: measure the head, not only segment it.
        create_markups: load the BPD/OFD/HC (and plane, AoP) markups.
        ga_weeks: known gestational age in weeks.
        pixel_size_mm: the pixel size to give the volume (and every frame) before the run; None keeps its own.
        tta: test-time flips; None: as the model recommends.
    """

    model: str = ""
    device: str = "auto"
    compute_biometry: bool = True
    create_markups: bool = True
    ga_weeks: float | None = None
    pixel_size_mm: float | None = None
    tta: bool | None = None

    @classmethod
    def from_parameters(cls, parameters: Any) -> RunOptions:
        """The run the panel's parameter node (``FetalHeadSegParameterNode``) asks for; zero means not given."""
        return cls(
            model=parameters.modelId,
            device=parameters.device,
            compute_biometry=parameters.computeBiometry,
            create_markups=parameters.createMarkups,
            ga_weeks=parameters.gestationalAgeWeeks or None,
            pixel_size_mm=parameters.pixelSizeMm or None,
            tta=TEST_TIME_FLIPS[parameters.testTimeFlips],
        )

    def worker_device(self) -> str:
        """The library's device: the panel's ``gpu`` is CUDA, or Metal on a Mac (``mps``)."""
        if self.device != "gpu":
            return self.device
        return "mps" if sys.platform == "darwin" else "cuda"


@dataclass
class SegmentationTask:
    """One run, from the export of its input to the imported results.

    Attributes:
        volume: the input volume (the proxy node when every frame of its sequence is segmented).
        output_segmentation: the segmentation node to fill; None makes a new one.
        options: what the panel asked for.
        temporary: the folder of the worker's input and output files (deleted when the run ends).
        frames: the sequence whose frames are segmented; None for one volume.
        callback: gets the worker's JSON events, then ``imported`` or ``failed``.
        notes: what the user is told when the run succeeds (e.g. that the pixel size was set).
        worker: the running worker.
        timer: the Qt timer that polls the worker (runs started without waiting).
        state: running, done, failed or cancelled.
        message: why the run failed.
        results: what was imported (when done).
        warnings: what the user is told with the results.
    """

    volume: Any
    output_segmentation: Any | None
    options: RunOptions
    temporary: Path
    frames: SequenceFrames | None = None
    callback: EventCallback | None = None
    notes: list[str] = field(default_factory=list)
    worker: Any = None
    timer: Any = None
    state: TaskState = TaskState.RUNNING
    message: str = ""
    results: ImportedResults | None = None
    warnings: list[str] = field(default_factory=list)

    def notify(self, event: Event) -> None:
        if self.callback is not None:
            self.callback(event)


def done_message(event: Event) -> str:
    """What the panel says when an ``imported`` event arrives: how long the run took, then every warning."""
    results, seconds = event["results"], float(event.get("seconds", 0.0))
    if results.frames:
        done = _("{count} frames segmented in {seconds:.1f} s.").format(count=results.frames, seconds=seconds)
    else:
        done = _("Done in {seconds:.1f} s on {device}.").format(seconds=seconds, device=results.device)
    return " ".join([done, *event.get("warnings", [])])


def first_plain_volume(scene: Any) -> Any | None:
    """The first scalar volume of ``scene`` that is not a label map or a vector volume (which the selector hides,
    but ``GetFirstNodeByClass`` would return)."""
    volumes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    plain = [volumes.GetItemAsObject(i) for i in range(volumes.GetNumberOfItems())]
    return next((v for v in plain if v.GetClassName() == "vtkMRMLScalarVolumeNode"), None)


def sequence_of(volume: Any) -> SequenceFrames | None:
    """The sequence ``volume`` shows, when it is the proxy node of a sequence of several frames; else None."""
    scene = volume.GetScene()
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(index, "vtkMRMLSequenceBrowserNode")
        sequence = browser.GetSequenceNode(volume)
        if sequence is not None and sequence.GetNumberOfDataNodes() > 1:
            return SequenceFrames(browser, sequence)
    return None


def apply_pixel_size(volume: Any, pixel_size_mm: float) -> bool:
    """Give ``volume`` the user's pixel size, as the worker's ``--spacing`` rule does: in-plane for a 2D frame
    (one slice), isotropic for a 3D volume; the origin and axes are kept. Returns whether anything changed."""
    dimensions = volume.GetImageData().GetDimensions() if volume.GetImageData() else (0, 0, 0)
    spacing = volume.GetSpacing()
    wanted = (pixel_size_mm, pixel_size_mm, spacing[2] if dimensions[2] == 1 else pixel_size_mm)
    if all(abs(a - b) <= 1e-6 * b for a, b in zip(spacing, wanted, strict=True)):
        return False
    volume.SetSpacing(*wanted)
    return True


def write_volume(volume: Any, path: Path) -> None:
    """Uncompressed NRRD for the worker (a frame of a sequence need not be in the scene).

    Raises:
        RuntimeError: Slicer could not write the file.
    """
    import slicer

    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(0)
    if not storage.WriteData(volume):
        raise RuntimeError(_("Could not write the volume to {path}.").format(path=path))


class SegmentationRunner:
    """Starts, polls, cancels and finishes segmentation tasks.

    Args:
        worker_factory: makes the worker of a command line (see :data:`WorkerFactory`).
        python_executable: the Python that runs the worker (PythonSlicer in Slicer).
        library_paths: folders the worker needs on its PYTHONPATH (FetalHeadSegLib's parent, the module's folder).
    """

    def __init__(self, worker_factory: WorkerFactory, python_executable: str, library_paths: list[str]) -> None:
        self.worker_factory = worker_factory
        self.python_executable = python_executable
        self.library_paths = library_paths

    def start(
        self,
        volume: Any,
        output_segmentation: Any | None,
        options: RunOptions,
        all_frames: bool = False,
        callback: EventCallback | None = None,
    ) -> SegmentationTask:
        """Export ``volume`` (with ``all_frames``, every frame of the sequence it shows) and start the worker.

        Raises:
            RuntimeError: the input could not be written for the worker.
        """
        import slicer

        frames = sequence_of(volume) if all_frames else None
        task = SegmentationTask(
            volume, output_segmentation, options, Path(slicer.util.tempDirectory()), frames, callback
        )
        if options.pixel_size_mm:  # on the volume Slicer shows, so the worker's file and the results agree with it
            nodes = [volume, *self._frame_nodes(frames)]
            if any([apply_pixel_size(node, options.pixel_size_mm) for node in nodes]):
                task.notes.append(
                    _("The pixel size of {name} was set to {size:g} mm.").format(
                        name=volume.GetName(), size=options.pixel_size_mm
                    )
                )
        request = SegmentRequest(
            inputs=(str(self._export(task)),),
            output=task.temporary / "output",  # a new folder per run: nothing to overwrite
            model=options.model or None,
            device=options.worker_device(),
            biometry=options.compute_biometry,
            ga_weeks=options.ga_weeks,
            tta=options.tta,
        )
        environment = {"PYTHONPATH": os.pathsep.join([*self.library_paths, os.environ.get("PYTHONPATH", "")])}
        command = worker_command(self.python_executable, request)
        task.worker = self.worker_factory(command, environment, on_event=callback)
        return task

    @staticmethod
    def _frame_nodes(frames: SequenceFrames | None) -> list[Any]:
        if frames is None:
            return []
        return [frames.sequence.GetNthDataNode(i) for i in range(frames.sequence.GetNumberOfDataNodes())]

    @staticmethod
    def _export(task: SegmentationTask) -> Path:
        """Write the worker's input: one NRRD, or a folder with one NRRD per frame of the sequence."""
        if task.frames is None:
            path = task.temporary / "input.nrrd"
            write_volume(task.volume, path)
            return path
        folder = task.temporary / "frames"
        folder.mkdir()
        for index, node in enumerate(SegmentationRunner._frame_nodes(task.frames)):
            task.frames.files[f"frame{index:05d}.nrrd"] = index
            write_volume(node, folder / f"frame{index:05d}.nrrd")
        return folder

    def wait(self, task: SegmentationTask) -> SegmentationTask:
        """Block until the worker ends, then finish the task (scripts, tests and the self-test)."""
        task.worker.wait()
        self.finish(task)
        return task

    def watch(self, task: SegmentationTask) -> None:
        """Poll the worker from a Qt timer, so Slicer stays responsive; the task finishes on its own."""
        import qt

        task.timer = qt.QTimer()
        task.timer.setInterval(POLL_INTERVAL_MS)
        task.timer.connect("timeout()", lambda: self.poll(task))
        task.timer.start()

    def poll(self, task: SegmentationTask) -> None:
        """Read what the worker printed; finish the task once it has exited and every line has been read."""
        if task.state is not TaskState.RUNNING:
            return
        task.worker.poll()
        if task.worker.finished:
            if task.timer is not None:
                task.timer.stop()
            self.finish(task)

    def cancel(self, task: SegmentationTask) -> None:
        """Stop the worker and its children; nothing is imported."""
        if task.state is not TaskState.RUNNING:
            return
        if task.timer is not None:
            task.timer.stop()
        task.worker.cancel()
        task.state = TaskState.CANCELLED
        shutil.rmtree(task.temporary, ignore_errors=True)

    def finish(self, task: SegmentationTask) -> None:
        """Import the results of the ended worker (``done``), or say why there are none (``failed``)."""
        import slicer

        from FetalHeadSegSlicer.messages import error_message, warning_message

        state = task.worker.wait(timeout=5)  # the process has ended: collect what its reader threads still hold
        try:
            if task.frames is not None and state.results:  # frames that failed are reported, not fatal
                results = state.results
            elif task.worker.returncode != 0 or state.result is None:
                self._fail(
                    task, error_message(state.error_code, state.error, task.worker.returncode, state.last_stderr)
                )
                return
            else:
                results = [state.result]
            task.results = import_results(
                slicer.mrmlScene,
                task.volume,
                results,
                task.frames,
                task.output_segmentation,
                task.options.create_markups,
            )
        except Exception as err:  # noqa: BLE001 - from a timer no caller sees it: the task fails, with the reason
            logger.exception("FetalHeadSeg: importing the results failed")
            self._fail(task, _("Importing the results failed: {error}").format(error=err))
            return
        finally:
            shutil.rmtree(task.temporary, ignore_errors=True)
        warnings = list(task.notes)
        if task.frames is not None and len(task.frames.files) > len(results):
            count = len(task.frames.files) - len(results)
            warnings.append(_("{count} frame(s) could not be segmented (see the log).").format(count=count))
        warnings += [warning_message(w.get("code"), w.get("message")) for w in state.warnings]
        task.warnings = list(dict.fromkeys(warnings))
        task.state = TaskState.DONE
        seconds = sum(float(r.get("seconds", 0.0)) for r in state.results)
        task.notify({"event": "imported", "results": task.results, "warnings": task.warnings, "seconds": seconds})

    @staticmethod
    def _fail(task: SegmentationTask, message: str) -> None:
        task.state, task.message = TaskState.FAILED, message
        task.notify({"event": "failed", "message": message})
