"""FetalHeadSeg: segment the fetal head in ultrasound and measure it (3D Slicer module).

Thin by design: the work happens in FetalHeadSegLib, run by a background worker process (PythonSlicer -m
FetalHeadSegLib segment), and FetalHeadSegSlicer turns the worker's outputs into MRML nodes. Nothing heavy is
imported or installed until Apply is pressed.

Requires 3D Slicer 5.10 or later (Python 3.12): the library and scikit-image 0.26 need Python 3.11. On an older
Slicer the module loads, says so, and does nothing else.
"""

from __future__ import annotations  # Slicer's parameterNodeWrapper resolves string annotations (get_type_hints)

import logging
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


def registerSampleData() -> None:
    """Register the bundled phantom volume and HC18 frame (local files: no download)."""
    from FetalHeadSegSlicer.sampledata import register_sample_data

    register_sample_data(samplesDir(), MODULE_DIR / "Resources" / "Icons" / "FetalHeadSeg.png")


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
    testTimeFlips: Annotated[str, Choice(["auto", "on", "off"])] = "auto"


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
        from FetalHeadSegSlicer.models import ModelChooser

        self.models = ModelChooser(self.ui, lambda: self._parameterNode)  # the model list, bound by hand
        self.ui.outputSegmentationSelector.connect(
            "currentNodeChanged(vtkMRMLNode*)", self.ui.show3DButton.setSegmentationNode
        )
        self.ui.copyLogButton.connect(
            "clicked(bool)", lambda: qt.QApplication.clipboard().setText(self.ui.logTextEdit.toPlainText())
        )
        self.models.populate()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        if self._task is not None:
            self.logic.cancel(self._task)

    def onReload(self) -> None:
        from FetalHeadSegSlicer.panel import forget_helper_packages

        forget_helper_packages(sys.modules)  # the helper packages too, before the module itself
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
            from FetalHeadSegSlicer.logic import first_plain_volume

            if (volume := first_plain_volume(slicer.mrmlScene)) is not None:
                self._parameterNode.inputVolume = volume

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
        self.models.show()
        if self._task is not None:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Segment and measure") if ready else _("Select an input volume")

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
                from FetalHeadSegSlicer.logic import RunOptions

                options = RunOptions.from_parameters(node)
                self._task = self.logic.process(
                    node.inputVolume, node.outputSegmentation, options, allFrames, False, self._onEvent
                )
            except Exception:
                self.ui.statusLabel.text = _("Failed to start the segmentation.")
                raise
            self._checkCanApply()

    def _installRequirements(self) -> bool:
        """Install what the worker needs (dialogs for what fails); False when the run cannot start."""
        from FetalHeadSegSlicer.installer import install_or_explain

        self.ui.statusLabel.text = _("Checking the Python packages...")
        self.ui.applyButton.enabled = False  # pip and PyTorchUtils process events: no second click meanwhile
        slicer.app.processEvents()
        try:
            problem = install_or_explain(self.logic.setupPythonRequirements, _("{message}\n\nRestart Slicer now?"))
        finally:
            self._checkCanApply()
        self.ui.statusLabel.text = problem or self.ui.statusLabel.text
        return problem is None

    def _onEvent(self, event: dict) -> None:
        from FetalHeadSegSlicer.panel import show_event

        message = show_event(self.ui, event)
        if message is None:
            return
        results = event.get("results")
        if results is not None and results.segmentation is not None:
            self._parameterNode.outputSegmentation = results.segmentation
            self.ui.show3DButton.setSegmentationNode(results.segmentation)
        self._onFinished(message)  # first: the run is over either way
        if results is not None and results.plane:
            from FetalHeadSegSlicer.results import show_plane

            show_plane(slicer.mrmlScene, results.plane)

    def _onFinished(self, message: str) -> None:
        self._task = None
        self.ui.statusLabel.text = message
        self._checkCanApply()


class FetalHeadSegLogic(ScriptedLoadableModuleLogic):
    """Headless facade: ``process`` segments a volume in a worker process and imports the results; the run is
    FetalHeadSegSlicer.logic's. ``workerFactory`` (FetalHeadSegSlicer.logic.WorkerFactory) is injected: by default
    runner.WorkerProcess, which needs torch; the self-test's stand-in does not."""

    def __init__(self, workerFactory=None, pythonExecutable: str | None = None, installer=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        if str(libraryParent()) not in sys.path:  # a source checkout: Slicer adds only the module's folder
            sys.path.append(str(libraryParent()))
        from FetalHeadSegSlicer import installer as defaultInstaller
        from FetalHeadSegSlicer.logic import SegmentationRunner
        from FetalHeadSegSlicer.runner import WorkerProcess

        self.requiresTorch = workerFactory is None
        self.installer = installer or defaultInstaller
        self.runner = SegmentationRunner(
            workerFactory or WorkerProcess,
            pythonExecutable or shutil.which("PythonSlicer") or sys.executable,
            [str(libraryParent()), str(MODULE_DIR)],
        )

    def getParameterNode(self):
        return FetalHeadSegParameterNode(super().getParameterNode())

    def setupPythonRequirements(self, interactive: bool = True) -> None:
        """torch through the PyTorch extension (when the worker needs it), then requirements.txt (confirmed).

        Raises:
            FetalHeadSegSlicer.installer.InstallError: declined, failed, or finished only after a restart.
        """
        if self.requiresTorch:
            self.installer.ensure_torch(interactive)
        self.installer.ensure_requirements(MODULE_DIR / "Resources" / "requirements.txt", interactive)

    @staticmethod
    def modelDescriptions() -> list:
        """(id, one-line description with the measured CPU time per case) of every installed model."""
        from FetalHeadSegSlicer.models import model_descriptions

        return model_descriptions()

    def process(
        self,
        inputVolume,
        outputSegmentation=None,
        options=None,
        allFrames=False,
        waitForCompletion=True,
        eventCallback=None,
    ):
        """Segment ``inputVolume`` (with ``allFrames``, every frame of the sequence it shows) as ``options`` (a
        FetalHeadSegSlicer.logic.RunOptions) ask; returns the run's SegmentationTask, finished when
        ``waitForCompletion``, else polled by a timer. ``eventCallback`` gets the worker's JSON events, then
        ``imported`` or ``failed``.

        Raises:
            ValueError: no input volume.
            RuntimeError: the input could not be exported; with ``waitForCompletion``, the run failed (after the
                ``failed`` event; the message says why and what to do).
        """
        from FetalHeadSegSlicer.logic import RunOptions, TaskState

        if inputVolume is None:
            raise ValueError(_("Select an input volume."))
        task = self.runner.start(inputVolume, outputSegmentation, options or RunOptions(), allFrames, eventCallback)
        if not waitForCompletion:
            self.runner.watch(task)
        elif self.runner.wait(task).state is TaskState.FAILED:
            raise RuntimeError(task.message)
        return task

    def cancel(self, task) -> None:
        """Stop the worker and its children; nothing is imported."""
        self.runner.cancel(task)

    @staticmethod
    def sequenceOf(volume):
        """(browser, sequence) when ``volume`` is the proxy of a sequence of several frames, else None."""
        from FetalHeadSegSlicer.logic import sequence_of

        frames = sequence_of(volume)
        return None if frames is None else (frames.browser, frames.sequence)

    @staticmethod
    def deleteImportedModels() -> list:
        """Remove the imported model bundles (bundled models stay); returns the removed folders."""
        from FetalHeadSegLib.models.catalog import remove_imported_models

        return remove_imported_models()

    @staticmethod
    def importModel(path: Path) -> Path:
        """Install a model bundle (folder, bundle.json or .zip) after verifying its SHA-256 checksums."""
        from FetalHeadSegLib.models.catalog import import_model

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
        from FetalHeadSegSlicer.installer import installed_version
        from FetalHeadSegSlicer.testing import TruthMaskWorker, apply_and_check

        self.delayDisplay("Segmenting the bundled phantom from the panel")
        volume = slicer.util.loadVolume(str(samplesDir() / "phantom3d_s000001_image.nii.gz"))
        widget = slicer.util.getModuleWidget("FetalHeadSeg")
        if installed_version("torch") is None:
            widget.logic = FetalHeadSegLogic(TruthMaskWorker(samplesDir() / "phantom3d_s000001_head.nii.gz"))
        apply_and_check(self, widget, volume)
        self.delayDisplay("Test passed")
