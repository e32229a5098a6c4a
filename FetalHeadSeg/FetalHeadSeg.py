"""FetalHeadSeg: segment the fetal head in ultrasound and measure it (3D Slicer module).

Thin by design: the work happens in FetalHeadSegLib, run by a background worker process (PythonSlicer -m
FetalHeadSegLib segment), and FetalHeadSegSlicer turns the worker's outputs into MRML nodes. Nothing heavy is
imported or installed until Apply is pressed.

Requires 3D Slicer 5.10 or later (Python 3.12): the library and scikit-image 0.26 need Python 3.11. On an older
Slicer the module loads, says so, and does nothing else.
"""

from __future__ import annotations  # Slicer's parameterNodeWrapper resolves string annotations (get_type_hints)

import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = Path(__file__).resolve().parent
MINIMUM_PYTHON = (3, 11)


def unsupportedSlicerMessage(versionInfo=sys.version_info) -> str | None:
    """Why this Slicer cannot run the module (Slicer 5.8 ships Python 3.9), or None when it can."""
    if tuple(versionInfo[:2]) >= MINIMUM_PYTHON:
        return None
    return _(
        "Fetal Head Segmentation requires 3D Slicer 5.10 or later; this Slicer runs Python {version}. "
        "Install a current Slicer from download.slicer.org."
    ).format(version=".".join(str(v) for v in versionInfo[:3]))


def libraryParent() -> Path:
    """The folder holding FetalHeadSegLib: beside the module when installed, the repository root in a checkout."""
    return MODULE_DIR if (MODULE_DIR / "FetalHeadSegLib").is_dir() else MODULE_DIR.parent


def samplesDir() -> Path:
    return libraryParent() / "FetalHeadSegLib" / "resources" / "samples"


class FetalHeadSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Fetal Head Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["FetalHeadSeg contributors"]
        self.parent.helpText = _(
            "Segments the fetal head in a 3D ultrasound volume or a 2D frame and measures head circumference, "
            "biparietal and occipitofrontal diameters, cephalic index, head volume, gestational age and, on "
            "intrapartum frames, the angle of progression. <b>Research use only: not a medical device.</b> "
            'See the <a href="https://github.com/FetalHeadSeg/SlicerFetalHeadSeg">documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Method: cascaded 3D fully convolutional networks with deep supervision and Random Erasing (Yang X et "
            "al.). 2D models trained on HC18 (van den Heuvel et al., PLoS ONE 2018, CC BY 4.0) and PSFHS (Chen et al., "
            "Sci Data 2024, CC BY 4.0); the 3D model on simulated volumes."
        )
        if unsupportedSlicerMessage():
            self.parent.helpText = unsupportedSlicerMessage()
            logging.error(unsupportedSlicerMessage())
            return
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Register the bundled phantom volume and HC18 frame (local files: no download)."""
    import SampleData

    icon = str(MODULE_DIR / "Resources" / "Icons" / "FetalHeadSeg.png")
    for sampleName, fileName, nodeName in (
        ("FetalHeadPhantom3D", "phantom3d_s000001_image.nii.gz", "FetalHeadPhantom3D"),
        ("FetalHeadHC18Frame", "hc18_207_HC.png", "FetalHeadHC18Frame"),
    ):
        path = samplesDir() / fileName
        if not path.exists():
            continue
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="Fetal head",
            sampleName=sampleName,
            uris=path.as_uri(),
            fileNames=fileName,
            nodeNames=nodeName,
            thumbnailFileName=icon,
            checksums=f"SHA256:{checksum}",
        )


@parameterNodeWrapper
class FetalHeadSegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelId: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "gpu"])] = "auto"
    computeBiometry: bool = True
    createMarkups: bool = True
    gestationalAgeWeeks: Annotated[float, WithinRange(0.0, 45.0)] = 0.0
    pixelSizeMm: Annotated[float, WithinRange(0.0, 5.0)] = 0.0
    testTimeAugmentation: bool = False


class FetalHeadSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if unsupportedSlicerMessage():
            label = qt.QLabel(unsupportedSlicerMessage())
            label.wordWrap = True
            self.layout.addWidget(label)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FetalHeadSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FetalHeadSegLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        # modelId is synced by hand: Slicer binds a str to a combo box only with a Choice, which would clear the
        # combo box and refill it with fixed items (guiConnectors.py, QComboBoxToStringableConnector); the model
        # list changes when models are imported, and each item has a tooltip.
        self.ui.modelIdComboBox.connect("currentIndexChanged(int)", self._onModelIndexChanged)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        self.ui.deleteModelsButton.connect("clicked(bool)", self.onDeleteModels)
        self.ui.outputSegmentationSelector.connect(
            "currentNodeChanged(vtkMRMLNode*)", self.ui.show3DButton.setSegmentationNode
        )
        self.ui.copyLogButton.connect(
            "clicked(bool)", lambda: qt.QApplication.clipboard().setText(self.ui.logTextEdit.toPlainText())
        )
        self._populateModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        if self._task is not None:
            self.logic.cancel(self._task)

    def onReload(self) -> None:
        """Reload the helper packages as well (the default reloads only this file).

        They are forgotten rather than reloaded one by one: reloading in any fixed order leaves some module with
        another's old classes (e.g. an old BundleError that ``except`` no longer matches). The lazy imports then
        load fresh, consistent copies.
        """
        packages = ("FetalHeadSegLib", "FetalHeadSegSlicer")
        for name in [n for n in sys.modules if n.split(".")[0] in packages]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None:
            self.logic.cancel(self._task)
            self._task = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            # GetFirstNodeByClass would also return label maps and vector volumes, which the selector hides
            volumes = slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode")
            plain = [volumes.GetItemAsObject(i) for i in range(volumes.GetNumberOfItems())]
            plain = [v for v in plain if v.GetClassName() == "vtkMRMLScalarVolumeNode"]
            if plain:
                self._parameterNode.inputVolume = plain[0]

    def setParameterNode(self, inputParameterNode: FetalHeadSegParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        self._showModelId()
        if self._task is not None:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Segment and measure") if ready else _("Select an input volume")

    def _populateModels(self) -> None:
        combo = self.ui.modelIdComboBox
        wasBlocked = combo.blockSignals(True)  # rebuilding the list is not a choice of the user
        try:
            combo.clear()
            combo.addItem("")  # default for the input's dimension
            for modelId, description in self.logic.modelDescriptions():
                combo.addItem(modelId)
                combo.setItemData(combo.count - 1, description, qt.Qt.ToolTipRole)
        finally:
            combo.blockSignals(wasBlocked)
        self._showModelId()

    def _onModelIndexChanged(self, index: int) -> None:
        if self._parameterNode is not None:
            self._parameterNode.modelId = self.ui.modelIdComboBox.currentText

    def _showModelId(self) -> None:
        """Show the parameter node's model in the combo box (a model no longer installed shows the default)."""
        combo = self.ui.modelIdComboBox
        index = max(combo.findText(self._parameterNode.modelId), 0) if self._parameterNode else 0
        if combo.currentIndex != index:
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = index
            combo.blockSignals(wasBlocked)

    def onApplyButton(self) -> None:
        if self._task is not None:
            self.logic.cancel(self._task)
            self._onFinished(_("Cancelled."))
            return
        node = self._parameterNode
        sequence = self.logic.sequenceOf(node.inputVolume)
        allFrames = sequence is not None and slicer.util.confirmYesNoDisplay(
            _("{name} shows a sequence of {count} frames. Segment every frame? (No: the shown frame only.)").format(
                name=node.inputVolume.GetName(), count=sequence[1].GetNumberOfDataNodes()
            )
        )
        if not self._installRequirements():
            return
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Starting the segmentation...")
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            try:
                self._task = self.logic.process(
                    node.inputVolume,
                    node.outputSegmentation,
                    node.modelId,
                    node.device,
                    node.computeBiometry,
                    node.createMarkups,
                    node.gestationalAgeWeeks or None,
                    node.pixelSizeMm or None,
                    testTimeAugmentation=node.testTimeAugmentation,
                    allFrames=allFrames,
                    waitForCompletion=False,
                    eventCallback=self._onEvent,
                )
            except Exception:
                self.ui.statusLabel.text = _("Failed to start the segmentation.")
                raise
            self._checkCanApply()

    def _installRequirements(self) -> bool:
        """Install what the worker needs (dialogs for what fails); False when the run cannot start."""
        from FetalHeadSegSlicer.installer import InstallError

        self.ui.statusLabel.text = _("Checking the Python packages...")
        self.ui.applyButton.enabled = False  # pip and PyTorchUtils process events: no second click meanwhile
        slicer.app.processEvents()
        try:
            self.logic.setupPythonRequirements()
        except InstallError as err:
            self.ui.statusLabel.text = str(err)
            if err.restart_required:
                if slicer.util.confirmOkCancelDisplay(_("{message}\n\nRestart Slicer now?").format(message=err)):
                    slicer.util.restart()
            else:
                slicer.util.errorDisplay(str(err))
            return False
        finally:
            self._checkCanApply()
        return True

    def _onEvent(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.ui.progressBar.value = int(100 * float(event.get("fraction", 0.0)))
            self.ui.statusLabel.text = f"{event.get('stage')}: {event.get('message', '')}"
        elif kind == "log":
            self.ui.logTextEdit.appendPlainText(event.get("message", ""))
        elif kind == "imported":
            if event.get("segmentation"):
                self._parameterNode.outputSegmentation = event["segmentation"]
                self.ui.show3DButton.setSegmentationNode(event["segmentation"])
            seconds = float(event.get("seconds", 0.0))
            if event.get("frames"):
                done = _("{count} frames segmented in {seconds:.1f} s.").format(count=event["frames"], seconds=seconds)
            else:
                done = _("Done in {seconds:.1f} s on {device}.").format(seconds=seconds, device=event.get("device", ""))
            self._onFinished(" ".join([done, *event.get("warnings", [])]))  # first: the run is over either way
            if event.get("plane"):
                self._jumpToPlane(event["plane"])
        elif kind == "failed":
            self._onFinished(_("Failed: {message}").format(message=event.get("message", "")))
        if kind not in ("progress",):
            self.ui.logTextEdit.appendPlainText(str(event))

    def _onFinished(self, message: str) -> None:
        self._task = None
        self.ui.statusLabel.text = message
        self._checkCanApply()

    def _jumpToPlane(self, plane: dict) -> None:
        """Show the measurement plane (world RAS) in the red slice view, when the layout has one."""
        sliceNode = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
        if sliceNode is None:  # no main window, or a layout without the red view
            return
        sliceNode.SetSliceToRASByNTP(*plane["normal_ras"], *plane["ofd_axis_ras"], *plane["origin_ras"], 0)

    def onImportModel(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The model could not be imported."), waitCursor=True):
            path = qt.QFileDialog.getOpenFileName(None, _("Import a model"), "", _("Model bundles (*.zip bundle.json)"))
            if path:
                target = self.logic.importModel(Path(path))
                self.ui.statusLabel.text = _("Imported the model into {folder}.").format(folder=target)
                self._populateModels()

    def onDeleteModels(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The models could not be deleted."), waitCursor=True):
            if slicer.util.confirmOkCancelDisplay(
                _("Delete every imported model? The models bundled with the extension stay.")
            ):
                removed = self.logic.deleteImportedModels()
                self.ui.statusLabel.text = _("Deleted {count} imported model(s).").format(count=len(removed))
                self._populateModels()

    def onOpenModelsFolder(self) -> None:
        from FetalHeadSegLib.catalog import model_home

        folder = model_home() / "models"
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))


class FetalHeadSegLogic(ScriptedLoadableModuleLogic):
    """Headless facade: ``process`` segments a volume in a worker process and imports the results.

    Collaborators are injected: ``workerFactory(command, environment, on_event)`` returns a worker with ``poll``,
    ``wait``, ``cancel``, ``returncode``, ``finished`` and ``state`` (FetalHeadSegSlicer.runner.WorkerProcess by
    default, which needs torch; another worker, such as the self-test's, does not).
    """

    def __init__(self, workerFactory=None, pythonExecutable: str | None = None, installer=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        if str(libraryParent()) not in sys.path:  # a source checkout: Slicer adds only the module's folder
            sys.path.append(str(libraryParent()))
        from FetalHeadSegSlicer import installer as defaultInstaller
        from FetalHeadSegSlicer.runner import WorkerProcess

        self.workerFactory = workerFactory or WorkerProcess
        self.requiresTorch = workerFactory is None
        self.pythonExecutable = pythonExecutable or shutil.which("PythonSlicer") or sys.executable
        self.installer = installer or defaultInstaller

    def getParameterNode(self):
        return FetalHeadSegParameterNode(super().getParameterNode())

    def setupPythonRequirements(self, interactive: bool = True) -> None:
        """torch through the PyTorch extension (when the worker needs it), then the packages of requirements.txt
        (each after a confirmation).

        Raises:
            FetalHeadSegSlicer.installer.InstallError: declined, failed, or finished only after a restart.
        """
        if self.requiresTorch:
            self.installer.ensure_torch(interactive)
        self.installer.ensure_requirements(MODULE_DIR / "Resources" / "requirements.txt", interactive)

    def modelDescriptions(self) -> list:
        """(id, one-line description with the measured CPU time per case) of every installed model."""
        from FetalHeadSegLib.bundle import read_bundle
        from FetalHeadSegLib.catalog import list_models
        from FetalHeadSegLib.errors import FetalHeadSegError

        descriptions = []
        for entry in list_models():
            try:
                bundle = read_bundle(entry.path)
            except FetalHeadSegError as err:
                descriptions.append((entry.id, _("Unreadable: {error}").format(error=err)))
                continue
            seconds = bundle.model_card.get("evaluation", {}).get("cpu_seconds_per_case", {}).get("mean")
            timing = _(", about {seconds:.0f} s per case on a 2-core CPU").format(seconds=seconds) if seconds else ""
            descriptions.append((entry.id, f"{bundle.name} {bundle.version} ({entry.dimension}D{timing})"))
        return descriptions

    def process(
        self,
        inputVolume,
        outputSegmentation=None,
        modelId: str = "",
        device: str = "auto",
        computeBiometry: bool = True,
        createMarkups: bool = True,
        gestationalAgeWeeks=None,
        pixelSizeMm=None,
        testTimeAugmentation: bool = False,
        allFrames: bool = False,
        waitForCompletion: bool = True,
        eventCallback=None,
    ):
        """Start the segmentation of ``inputVolume``; returns the task (finished when ``waitForCompletion``).

        The task's ``state`` goes from ``running`` to ``done`` (with ``segmentation``, ``table``, ``markups``),
        ``failed`` (with ``message``) or ``cancelled``. ``eventCallback`` gets the worker's JSON events, then
        ``imported`` or ``failed``. With ``allFrames`` and a volume that shows a sequence (``sequenceOf``), every
        frame is segmented by one worker; the segmentations become a sequence in the same browser and the
        measurements a table with one row per frame.
        """
        from FetalHeadSegSlicer.runner import SegmentationRequest, worker_command

        if inputVolume is None:
            raise ValueError(_("Select an input volume."))
        sequence = self.sequenceOf(inputVolume) if allFrames else None
        temporary = Path(slicer.util.tempDirectory())
        frameFiles = {}  # file name -> index of the frame in the sequence
        notes = []
        if pixelSizeMm:  # on the volume Slicer shows, so the file the worker reads and the results agree with it
            frameNodes = (
                [sequence[1].GetNthDataNode(i) for i in range(sequence[1].GetNumberOfDataNodes())] if sequence else []
            )
            if any([self.applyPixelSize(node, pixelSizeMm) for node in [inputVolume, *frameNodes]]):
                notes.append(
                    _("The pixel size of {name} was set to {size:g} mm.").format(
                        name=inputVolume.GetName(), size=pixelSizeMm
                    )
                )
        if sequence is None:
            inputPath = temporary / "input.nrrd"
            self._writeVolume(inputVolume, inputPath)
        else:
            inputPath = temporary / "frames"
            inputPath.mkdir()
            frames = sequence[1]
            for index in range(frames.GetNumberOfDataNodes()):
                frameFiles[f"frame{index:05d}.nrrd"] = index
            for fileName, index in frameFiles.items():
                self._writeVolume(frames.GetNthDataNode(index), inputPath / fileName)
        request = SegmentationRequest(
            input_path=inputPath,
            output_dir=temporary / "output",  # a new folder per run: nothing to overwrite
            model=modelId,
            device=self._workerDevice(device),
            compute_biometry=computeBiometry,
            ga_weeks=gestationalAgeWeeks,
            tta=testTimeAugmentation,
        )
        environment = {
            "PYTHONPATH": os.pathsep.join([str(libraryParent()), str(MODULE_DIR), os.environ.get("PYTHONPATH", "")])
        }
        task = {
            "inputVolume": inputVolume,
            "outputSegmentation": outputSegmentation,
            "createMarkups": createMarkups,
            "temporary": temporary,
            "callback": eventCallback,
            "timer": None,
            "state": "running",
            "sequence": sequence,
            "frameFiles": frameFiles,
            "notes": notes,
        }
        task["worker"] = self.workerFactory(
            worker_command(self.pythonExecutable, request), environment, on_event=eventCallback
        )
        if waitForCompletion:
            task["worker"].wait()
            self._finish(task)
        else:
            timer = qt.QTimer()
            timer.setInterval(200)
            timer.connect("timeout()", lambda: self._poll(task))
            timer.start()
            task["timer"] = timer
        return task

    @staticmethod
    def applyPixelSize(volume, pixelSizeMm: float) -> bool:
        """Give ``volume`` the user's pixel size, as the worker's ``--spacing`` rule does: in-plane for a 2D frame
        (one slice), isotropic for a 3D volume; the origin and axes are kept. Returns whether anything changed."""
        dimensions = volume.GetImageData().GetDimensions() if volume.GetImageData() else (0, 0, 0)
        spacing = volume.GetSpacing()
        wanted = (pixelSizeMm, pixelSizeMm, spacing[2] if dimensions[2] == 1 else pixelSizeMm)
        if all(abs(a - b) <= 1e-6 * b for a, b in zip(spacing, wanted, strict=True)):
            return False
        volume.SetSpacing(*wanted)
        return True

    @staticmethod
    def _workerDevice(device: str) -> str:
        """The panel's "gpu" is CUDA, or Metal on a Mac (the library's "mps")."""
        if device != "gpu":
            return device
        return "mps" if sys.platform == "darwin" else "cuda"

    @staticmethod
    def sequenceOf(volume):
        """(browser, sequence) when ``volume`` is the proxy of a sequence of several frames, else None."""
        scene = volume.GetScene()
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
            browser = scene.GetNthNodeByClass(index, "vtkMRMLSequenceBrowserNode")
            sequence = browser.GetSequenceNode(volume)
            if sequence is not None and sequence.GetNumberOfDataNodes() > 1:
                return browser, sequence
        return None

    @staticmethod
    def _writeVolume(volume, path: Path) -> None:
        """Uncompressed NRRD for the worker (a frame of a sequence need not be in the scene)."""
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(0)
        if not storage.WriteData(volume):
            raise RuntimeError(_("Could not write the volume to {path}.").format(path=path))

    def _poll(self, task) -> None:
        if task["state"] != "running":
            return
        task["worker"].poll()
        if task["worker"].finished:  # exited, and every line it printed has been read
            task["timer"].stop()
            try:
                self._finish(task)
            except Exception:
                logging.exception("FetalHeadSeg: the segmentation failed")

    def cancel(self, task) -> None:
        """Stop the worker and its children; nothing is imported."""
        if task["state"] != "running":
            return
        if task.get("timer") is not None:
            task["timer"].stop()
        task["worker"].cancel()
        task["state"] = "cancelled"
        shutil.rmtree(task["temporary"], ignore_errors=True)

    def _finish(self, task) -> None:
        """Import the results of a finished worker, or report why there are none.

        Raises:
            RuntimeError: the worker failed (the message says why and what to do); after the ``failed`` event.
        """
        from FetalHeadSegSlicer.messages import error_message, warning_message

        worker = task["worker"]
        state = worker.wait(timeout=5)  # the process has ended: collect what its reader threads still hold
        callback = task["callback"] or (lambda event: None)
        try:
            warnings = list(task["notes"])
            if task["sequence"] is not None and state.results:  # frames that failed are reported, not fatal
                imported = self.importSequenceResults(task, state.results)
                failed = len(task["frameFiles"]) - len(state.results)
                if failed:
                    warnings.append(_("{count} frame(s) could not be segmented (see the log).").format(count=failed))
            elif worker.returncode != 0 or state.result is None:
                task["state"] = "failed"
                task["message"] = error_message(state.error_code, state.error, worker.returncode, state.last_stderr)
                callback({"event": "failed", "message": task["message"]})
                raise RuntimeError(task["message"])
            else:
                imported = self.importResults(task, state.result["outputs"])
            warnings += [warning_message(w.get("code"), w.get("message")) for w in state.warnings]
            warnings = list(dict.fromkeys(warnings))
            seconds = sum(float(r.get("seconds", 0.0)) for r in state.results)
            task.update(imported, state="done", warnings=warnings)
            callback({"event": "imported", **imported, "warnings": warnings, "seconds": seconds})
        except Exception as err:
            if task["state"] == "running":  # the import itself failed
                task["state"], task["message"] = "failed", _("Importing the results failed: {error}").format(error=err)
                callback({"event": "failed", "message": task["message"]})
            raise
        finally:
            shutil.rmtree(task["temporary"], ignore_errors=True)

    @staticmethod
    def _readOutputs(outputs: dict):
        """The worker's label map, biometry record and the model's segments (value, name, colour, terminology)."""
        import json

        from FetalHeadSegLib.catalog import find_model
        from FetalHeadSegLib.errors import BundleError
        from FetalHeadSegLib.io import read_image
        from FetalHeadSegLib.labels import HEAD

        labels = read_image(outputs["labels"])
        record = json.loads(Path(outputs["biometry"]).read_text()) if outputs.get("biometry") else {}
        try:
            modelLabels = find_model(record.get("provenance", {}).get("model_id", "")).labels
        except BundleError:
            modelLabels = [HEAD]
        segments = [dict(label.to_dict(), terminology_entry=label.terminology_entry) for label in modelLabels]
        return labels, record, segments

    def importResults(self, task, outputs: dict) -> dict:
        """Segmentation, biometry table and markups from the worker's output files."""
        from FetalHeadSegSlicer.scene import create_biometry_table, create_markups, import_segmentation

        scene = slicer.mrmlScene
        volume = task["inputVolume"]
        labels, record, segments = self._readOutputs(outputs)
        provenance = record.get("provenance", {})
        name = volume.GetName()
        segmentation = import_segmentation(
            scene,
            labels.array,
            labels.ijk_to_ras,
            segments,
            f"{name} fetal head",
            volume,
            provenance,
            task["outputSegmentation"],
            transform_node_id=volume.GetTransformNodeID(),  # the worker's RAS is the volume's local frame
        )
        result = {"segmentation": segmentation, "device": provenance.get("device", ""), "plane": None}
        study = self._studyItem(scene, volume)
        self._placeInHierarchy(scene, study, [segmentation])
        if record.get("hc_mm") is not None:
            result["table"] = create_biometry_table(scene, record, f"{name} biometrics")
            biometryNodes = [result["table"]]
            if task["createMarkups"]:
                result["markups"] = create_markups(scene, record, name, volume.GetTransformNodeID())
                biometryNodes += list(result["markups"].values())
            shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
            self._placeInHierarchy(scene, shNode.CreateFolderItem(study, f"{name} biometry"), biometryNodes)
            result["plane"] = self._planeInWorld(record.get("plane"), volume)
        return result

    @staticmethod
    def _planeInWorld(plane, volume):
        """The measurement plane (origin, normal, OFD axis) moved by the volume's parent transforms, if any."""
        if not plane:
            return None
        toWorld = vtk.vtkMatrix4x4()
        slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(volume.GetParentTransformNode(), None, toWorld)
        origin = toWorld.MultiplyPoint([*plane["origin_ras"], 1.0])[:3]
        normal = toWorld.MultiplyPoint([*plane["normal_ras"], 0.0])[:3]
        axis = toWorld.MultiplyPoint([*plane["ofd_axis_ras"], 0.0])[:3]
        return {**plane, "origin_ras": list(origin), "normal_ras": list(normal), "ofd_axis_ras": list(axis)}

    def importSequenceResults(self, task, results: list) -> dict:
        """A segmentation sequence in the input's browser (frames the worker could not segment stay empty) and a
        table with one row per frame."""
        from FetalHeadSegSlicer.scene import create_frame_table, import_segmentation

        scene = slicer.mrmlScene
        volume = task["inputVolume"]
        browser, frames = task["sequence"]
        name = volume.GetName()
        output = scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{name} fetal head sequence")
        output.SetIndexName(frames.GetIndexName())
        output.SetIndexUnit(frames.GetIndexUnit())
        output.SetIndexType(frames.GetIndexType())
        rows = []
        for event in sorted(results, key=lambda e: task["frameFiles"][Path(e["input"]).name]):
            indexValue = frames.GetNthIndexValue(task["frameFiles"][Path(event["input"]).name])
            labels, record, segments = self._readOutputs(event["outputs"])
            frameName = f"{name} fetal head {indexValue}"
            provenance = record.get("provenance", {})
            segmentation = import_segmentation(
                scene,
                labels.array,
                labels.ijk_to_ras,
                segments,
                frameName,
                volume,
                provenance,
                closed_surface=False,  # per frame it would be discarded work; Show 3D makes it on request
                display=False,  # the item leaves the scene at once; the proxy gets its own display nodes
            )
            output.SetDataNodeAtValue(segmentation, indexValue)  # the sequence keeps a copy
            scene.RemoveNode(segmentation)
            if record.get("hc_mm") is not None:
                rows.append((indexValue, record))
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
        unit = frames.GetIndexUnit()
        indexHeading = f"{frames.GetIndexName()} ({unit})" if unit else frames.GetIndexName()
        result = {"segmentation": proxy, "sequence": output, "frames": len(results), "plane": None}
        if rows:
            result["table"] = create_frame_table(scene, rows, indexHeading, f"{name} biometrics per frame")
        study = self._studyItem(scene, volume)
        self._placeInHierarchy(scene, study, [output, *([result["table"]] if rows else [])])
        return result

    @staticmethod
    def _studyItem(scene, volume) -> int:
        """The subject hierarchy item holding the input volume (its study), else the scene."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        item = shNode.GetItemByDataNode(volume)
        if item == shNode.GetInvalidItemID():
            return shNode.GetSceneItemID()
        return shNode.GetItemParent(item)

    @staticmethod
    def _placeInHierarchy(scene, parentItem: int, nodes) -> None:
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        for node in nodes:
            item = shNode.GetItemByDataNode(node)
            if item == shNode.GetInvalidItemID():  # no subject hierarchy plugins (scripts, tests): add the item
                shNode.CreateItem(parentItem, node)
            else:
                shNode.SetItemParent(item, parentItem)

    def deleteImportedModels(self) -> list:
        """Remove every model bundle from the user's model folder (bundled models stay); returns the removed folders."""
        from FetalHeadSegLib.catalog import remove_imported_models

        return remove_imported_models()

    def importModel(self, path: Path) -> Path:
        """Install a model bundle (folder, its bundle.json, or a .zip) after verifying its SHA-256 checksums."""
        from FetalHeadSegLib.catalog import import_model

        return import_model(path)


class FetalHeadSegTest(ScriptedLoadableModuleTest):
    """The panel's path on the bundled phantom: Apply installs what the worker needs, the worker runs in the
    background while the event loop turns, and the segmentation, table and markups land in the scene.

    With torch installed the real worker and default model run. Without it (the test never installs torch: it is
    large), a stand-in worker writes the same outputs from the phantom's exact head mask, so the Slicer side is
    always exercised. scikit-image and the other packages of requirements.txt are installed as on a first Apply.
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_FetalHeadSeg_panel()

    def test_FetalHeadSeg_panel(self) -> None:
        import time

        from FetalHeadSegSlicer.installer import installed_version

        self.delayDisplay("Segmenting the bundled phantom from the panel")
        volume = slicer.util.loadVolume(str(samplesDir() / "phantom3d_s000001_image.nii.gz"))
        widget = slicer.util.getModuleWidget("FetalHeadSeg")
        if installed_version("torch") is None:
            from FetalHeadSegSlicer.testing import TruthMaskWorker

            widget.logic = FetalHeadSegLogic(
                workerFactory=TruthMaskWorker(samplesDir() / "phantom3d_s000001_head.nii.gz")
            )
        widget.initializeParameterNode()
        widget.ui.inputVolumeSelector.setCurrentNode(volume)
        widget.ui.deviceComboBox.currentIndex = widget.ui.deviceComboBox.findText("cpu")
        self.assertTrue(widget.ui.applyButton.enabled, "the panel's widgets are not bound to the parameter node")
        widget.ui.applyButton.click()
        task = widget._task
        self.assertIsNotNone(task, widget.ui.statusLabel.text)
        deadline = time.monotonic() + 600
        while task["state"] == "running" and time.monotonic() < deadline:
            slicer.app.processEvents()  # the panel's timer polls the worker
            time.sleep(0.05)
        self.assertEqual(task["state"], "done", task.get("message"))
        self.assertIsNone(widget._task)
        self.assertEqual(widget.ui.applyButton.text, "Apply")
        segmentation = task["segmentation"].GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 1)
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(0))
        self.assertEqual(segment.GetName(), "Head")
        tag = vtk.reference("")
        self.assertTrue(segment.GetTag(segment.GetTerminologyEntryTagName(), tag))
        self.assertIn("SCT^69536005^Head", str(tag))
        self.assertGreater(task["table"].GetNumberOfRows(), 4)
        bpd = float(task["table"].GetTable().GetValue(1, 1).ToString())
        self.assertAlmostEqual(task["markups"]["BPD"].GetLineLengthWorld(), bpd, delta=0.01)
        self.delayDisplay("Test passed")
