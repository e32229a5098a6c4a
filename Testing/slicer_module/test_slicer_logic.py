"""The module's Logic driven as Slicer drives it, without the application (``slicer.md`` §11.5).

``slicer`` here is the slicer-core wheel (real MRML) with the application parts Slicer adds at run time replaced by
recording stand-ins (``slicer.util`` dialogs and pip, ``slicer.app``, the ScriptedLoadableModule bases, ``qt``).
Covered: the install decisions and restart handling, the task's state machine and cancel, the error-code to
message mapping, warnings reaching the user, and a real worker process whose results land in the scene without
any network access.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import subprocess
import sys
import time
import types
import unittest
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import slicer_fakes
import vtk

from FetalHeadSegLib.core.io import read_image
from FetalHeadSegLib.core.samples import get_sample

slicer_core = pytest.importorskip("slicer")
if not hasattr(slicer_core, "vtkMRMLScene"):
    pytest.skip("this 'slicer' is not Slicer's MRML (install slicer-core)", allow_module_level=True)

REPOSITORY = Path(__file__).resolve().parents[2]
MODULE_FILE = REPOSITORY / "FetalHeadSeg" / "FetalHeadSeg.py"
sys.path.insert(0, str(REPOSITORY / "FetalHeadSeg"))

from FetalHeadSegSlicer.installer import InstallError  # noqa: E402
from FetalHeadSegSlicer.logic import RunOptions  # noqa: E402
from FetalHeadSegSlicer.runner import WorkerState  # noqa: E402
from FetalHeadSegSlicer.testing import TruthMaskWorker  # noqa: E402


class FakeTimer:
    """qt.QTimer that the test fires by hand."""

    def __init__(self) -> None:
        self.active, self.callback = False, None

    def setInterval(self, milliseconds: int) -> None:  # noqa: N802 - Qt's name
        pass

    def connect(self, signal: str, callback: Callable[[], None]) -> None:
        self.callback = callback

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def fire(self) -> None:
        if self.active and self.callback is not None:
            self.callback()


class Application:
    """What the stand-ins recorded: dialogs shown, answers given, packages installed, restarts asked for."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.confirm_answer = True
        self.questions: list[str] = []
        self.errors: list[str] = []
        self.pip_installed: list[list[str]] = []
        self.timers: list[FakeTimer] = []
        self.scene = slicer_core.vtkMRMLScene()
        self._temporary = itertools.count()

    def temp_directory(self) -> str:
        path = self.tmp_path / f"slicer-temp-{next(self._temporary)}"
        path.mkdir()
        return str(path)

    def confirm(self, text: str, *args: Any, **kwargs: Any) -> bool:
        self.questions.append(text)
        return self.confirm_answer

    def timer(self) -> FakeTimer:
        self.timers.append(FakeTimer())
        return self.timers[-1]


@pytest.fixture
def application(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Application:
    """Fake Slicer application modules in ``sys.modules`` (restored afterwards) around the real MRML."""
    app = Application(tmp_path)
    factory = slicer_core.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():  # Slicer registers these at startup (the Segmentations module)
        for rule in ("BinaryLabelmapToClosedSurface", "ClosedSurfaceToBinaryLabelmap"):
            factory.RegisterConverterRule(getattr(slicer_core, f"vtk{rule}ConversionRule")())
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = slicer_core.util.VTKObservationMixin  # type: ignore[attr-defined]
    util.tempDirectory = app.temp_directory  # type: ignore[attr-defined]
    util.confirmOkCancelDisplay = app.confirm  # type: ignore[attr-defined]
    util.errorDisplay = app.errors.append  # type: ignore[attr-defined]
    util.pip_install = app.pip_installed.append  # type: ignore[attr-defined]
    util.tryWithErrorDisplay = slicer_fakes.try_with_error_display(app.errors)  # type: ignore[attr-defined]
    util.confirmYesNoDisplay = app.confirm  # type: ignore[attr-defined]
    util.loadUI = slicer_fakes.loadUI  # type: ignore[attr-defined]
    util.childWidgetVariables = slicer_fakes.childWidgetVariables  # type: ignore[attr-defined]
    util.loadSegmentation, util.loadMarkups = slicer_fakes.loaders(app.scene)  # type: ignore[attr-defined]
    util.loadVolume = lambda path: _add_volume(app.scene, Path(path), Path(path).name.split(".")[0])  # type: ignore[attr-defined]

    fake = types.ModuleType("slicer")
    fake.__getattr__ = lambda name: getattr(slicer_core, name)  # type: ignore[attr-defined]
    fake.util = util  # type: ignore[attr-defined]
    fake.mrmlScene = app.scene  # type: ignore[attr-defined]
    fake.app = types.SimpleNamespace(  # type: ignore[attr-defined]
        connect=lambda *args: None,
        processEvents=lambda: [timer.fire() for timer in app.timers],  # Qt's event loop runs the timers
        layoutManager=lambda: None,  # as with --no-main-window
        setOverrideCursor=lambda cursor: None,
        restoreOverrideCursor=lambda: None,
        testingEnabled=lambda: False,
    )
    sequences = slicer_core.vtkSlicerSequencesLogic()
    sequences.SetMRMLScene(app.scene)
    fake.modules = types.SimpleNamespace(  # type: ignore[attr-defined]
        sequences=types.SimpleNamespace(logic=lambda: sequences)
    )

    bases = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleLogic:
        def getParameterNode(self) -> Any:  # noqa: N802 - Slicer's name
            """One parameter node per module and scene, as Slicer's logic keeps it."""
            node = app.scene.GetSingletonNode("FetalHeadSeg", "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer_core.vtkMRMLScriptedModuleNode()
                node.SetSingletonTag("FetalHeadSeg")
                node = app.scene.AddNode(node)
            return node

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent: Any = None) -> None:
            self.parent = parent or types.SimpleNamespace(isEntered=True)
            self.layout = types.SimpleNamespace(addWidget=lambda widget: None)

        def setup(self) -> None:
            pass

        def resourcePath(self, filename: str) -> str:  # noqa: N802 - Slicer's name
            return str(MODULE_FILE.parent / "Resources" / filename)

    bases.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {})  # type: ignore[attr-defined]
    bases.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget  # type: ignore[attr-defined]
    bases.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic  # type: ignore[attr-defined]
    bases.ScriptedLoadableModuleTest = type(  # type: ignore[attr-defined]
        "ScriptedLoadableModuleTest", (unittest.TestCase,), {"delayDisplay": lambda self, message: None}
    )
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = slicer_fakes.parameterNodeWrapper  # type: ignore[attr-defined]
    wrapper.Choice = slicer_fakes.Choice  # type: ignore[attr-defined]
    wrapper.WithinRange = slicer_fakes.WithinRange  # type: ignore[attr-defined]
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text  # type: ignore[attr-defined]
    i18n.translate = lambda context, text: text  # type: ignore[attr-defined]
    qt = types.ModuleType("qt")
    qt.QTimer = app.timer  # type: ignore[attr-defined]
    qt.Qt = types.SimpleNamespace(ToolTipRole=3, WaitCursor=16)  # type: ignore[attr-defined]

    modules = {
        "slicer": fake,
        "slicer.util": util,
        "slicer.ScriptedLoadableModule": bases,
        "slicer.parameterNodeWrapper": wrapper,
        "slicer.i18n": i18n,
        "qt": qt,
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return app


@pytest.fixture
def module(application: Application, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """FetalHeadSeg/FetalHeadSeg.py imported under the fake application, as Slicer loads it: put in sys.modules,
    then executed (qSlicerScriptedUtils::loadSourceAsModule), so string annotations resolve."""
    spec = importlib.util.spec_from_file_location("FetalHeadSeg_under_test", MODULE_FILE)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "FetalHeadSeg_under_test", loaded)
    spec.loader.exec_module(loaded)
    widgets: list[Any] = []

    def get_module_widget(name: str) -> Any:
        """slicer.util.getModuleWidget: the module's widget, created and set up on first use."""
        if not widgets:
            widgets.append(loaded.FetalHeadSegWidget())
            widgets[0].setup()
        return widgets[0]

    sys.modules["slicer"].util.getModuleWidget = get_module_widget
    yield loaded
    for widget in widgets:
        widget.cleanup()  # as Slicer does when the module is unloaded: its scene observers go


def _add_volume(scene: Any, path: Path, name: str) -> Any:
    image = read_image(path)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    volume.SetAndObserveImageData(slicer_fakes.vtk_image(image.array.astype(np.float32)))
    volume.SetIJKToRASMatrix(slicer_fakes.vtk_matrix(image.ijk_to_ras))
    return volume


class ScriptedWorker:
    """A worker whose end the test decides: still running, or finished with a return code, events and error."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.state = WorkerState()
        self.cancelled = False
        self.command: list[str] = []

    def __call__(self, command: list[str], environment: dict[str, str], on_event: Any = None) -> ScriptedWorker:
        self.command = command
        return self

    @property
    def finished(self) -> bool:
        return self.returncode is not None

    def poll(self) -> WorkerState:
        return self.state

    def wait(self, timeout: float | None = None) -> WorkerState:
        return self.state

    def cancel(self) -> None:
        self.cancelled = True


def _segmentations(scene: Any) -> int:
    return scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")


def test_cancel_stops_the_worker_and_imports_nothing(application: Application, module: Any) -> None:
    worker = ScriptedWorker()
    events: list[dict[str, Any]] = []
    logic = module.FetalHeadSegLogic(workerFactory=worker, pythonExecutable=sys.executable)
    volume = _add_volume(application.scene, get_sample("phantom3d_s000001").image_path, "phantom")
    options = RunOptions(tta=True)
    task = logic.process(volume, options=options, waitForCompletion=False, eventCallback=events.append)
    assert task.state == "running" and "--tta" in worker.command
    assert "--no-tta" not in worker.command
    exported = task.temporary / "input.nrrd"
    assert read_image(exported).shape == (112, 112, 112)  # the volume as the worker reads it
    timer = application.timers[-1]
    timer.fire()  # the worker is still running: nothing happens
    assert task.state == "running" and timer.active
    logic.cancel(task)
    assert worker.cancelled and task.state == "cancelled" and not timer.active
    assert not task.temporary.exists()
    worker.returncode = -9  # the killed worker's end, seen by a late poll, changes nothing
    logic.runner.poll(task)
    assert task.state == "cancelled" and _segmentations(application.scene) == 0 and events == []


@pytest.mark.parametrize(
    ("code", "message", "returncode", "expected"),
    [
        ("InputImageError", "v.nrrd: holds NaN or infinite values", 2, "holds NaN or infinite values. Check the input"),
        ("ChecksumError", "weights/level0.pt: SHA-256 mismatch", 2, "import the model again"),
        ("DeviceError", "CUDA was asked for but is not available", 2, "Set Device to cpu"),
        (None, None, -9, "killed (signal 9): it may have run out of memory"),
        (None, None, 1, "stopped without a result (exit code 1) (MemoryError: boom). Copy the log"),
    ],
)
def test_a_failed_run_tells_the_user_why_and_what_to_do(
    application: Application, module: Any, code: str | None, message: str | None, returncode: int, expected: str
) -> None:
    worker = ScriptedWorker()
    events: list[dict[str, Any]] = []
    logic = module.FetalHeadSegLogic(workerFactory=worker, pythonExecutable=sys.executable)
    volume = _add_volume(application.scene, get_sample("phantom3d_s000001").image_path, "phantom")
    task = logic.process(volume, waitForCompletion=False, eventCallback=events.append)
    worker.returncode, worker.state.error_code, worker.state.error = returncode, code, message
    worker.state.last_stderr = "MemoryError: boom"
    application.timers[-1].fire()
    assert task.state == "failed" and expected in task.message
    assert events == [{"event": "failed", "message": task.message}]
    assert _segmentations(application.scene) == 0 and not task.temporary.exists()
    with pytest.raises(RuntimeError, match="exit code|Check|import|Device|killed"):
        worker.returncode = returncode
        logic.process(volume, waitForCompletion=True)


def test_results_and_warnings_reach_the_scene_and_the_user(application: Application, module: Any) -> None:
    sample = get_sample("phantom3d_s000001")
    truth = TruthMaskWorker(sample.annotation_path)

    def worker_with_a_warning(command: list[str], environment: dict[str, str], on_event: Any = None) -> Any:
        worker = truth(command, environment, on_event)
        worker.state.warnings.append({"event": "warning", "code": "oom_fallback", "message": "tiles"})
        return worker

    events: list[dict[str, Any]] = []
    logic = module.FetalHeadSegLogic(workerFactory=worker_with_a_warning, pythonExecutable=sys.executable)
    volume = _add_volume(application.scene, sample.image_path, "phantom")
    task = logic.process(volume, waitForCompletion=True, eventCallback=events.append)
    assert task.state == "done" and events[-1]["event"] == "imported"
    assert any("ran out of memory" in w for w in events[-1]["warnings"])
    segmentation = task.results.segmentation
    assert segmentation.GetName() == "phantom fetal head"
    assert segmentation.GetAttribute("FetalHeadSeg.model_id") == "truth-mask (self-test)"
    table = task.results.table.GetTable()
    bpd = float(table.GetValue(1, 1).ToString())
    assert task.results.markups["BPD"].GetLineLengthWorld() == pytest.approx(bpd, abs=0.01)
    assert not task.temporary.exists()


def test_results_go_into_the_input_volumes_study(application: Application, module: Any) -> None:
    sample = get_sample("phantom3d_s000001")
    hierarchy = slicer_core.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(application.scene)
    study = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Patient 1 study")
    volume = _add_volume(application.scene, sample.image_path, "phantom")
    hierarchy.CreateItem(study, volume)
    logic = module.FetalHeadSegLogic(workerFactory=TruthMaskWorker(sample.annotation_path))
    task = logic.process(volume, waitForCompletion=True)
    parent = hierarchy.GetItemParent
    assert parent(hierarchy.GetItemByDataNode(task.results.segmentation)) == study
    folder = parent(hierarchy.GetItemByDataNode(task.results.table))
    assert hierarchy.GetItemName(folder) == "phantom biometry" and parent(folder) == study
    for node in task.results.markups.values():
        assert parent(hierarchy.GetItemByDataNode(node)) == folder


def test_imported_models_are_verified_listed_and_deleted(
    application: Application, module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiny_models import make_tiny_bundle

    monkeypatch.setenv("FETALHEADSEG_HOME", str(tmp_path / "home"))
    logic = module.FetalHeadSegLogic()
    installed = logic.importModel(make_tiny_bundle(tmp_path / "download").path / "bundle.json")
    assert installed.parent == tmp_path / "home" / "models"
    ids = [model_id for model_id, _ in logic.modelDescriptions()]
    assert ids.count("fetal-head-3d-cascade") == 1 and len(ids) == 4  # the three bundled ones and the import
    assert logic.deleteImportedModels() == [installed]
    assert not installed.exists() and len(logic.modelDescriptions()) == 3


def test_a_real_worker_segments_without_network_access(
    application: Application, module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped 2D model on the bundled HC18 frame, in a worker process where every socket call fails."""
    blocker = tmp_path / "no_network"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import socket\n"
        "def _refuse(*args, **kwargs):\n"
        "    raise OSError('network access is disabled in this test')\n"
        "socket.socket.connect = socket.socket.connect_ex = _refuse\n"
        "socket.create_connection = socket.getaddrinfo = _refuse\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(blocker))
    probe = "import socket; socket.create_connection(('127.0.0.1', 9))"
    refused = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "network access is disabled" in refused.stderr  # the block is in force in child processes
    sample = get_sample("hc18_207_HC")
    volume = _add_volume(application.scene, sample.image_path, "frame")
    events: list[dict[str, Any]] = []
    logic = module.FetalHeadSegLogic(pythonExecutable=sys.executable)
    task = logic.process(
        volume,
        options=RunOptions(device="cpu", pixel_size_mm=sample.info["pixel_size_mm"]),
        waitForCompletion=False,
        eventCallback=events.append,
    )
    timer, deadline = application.timers[-1], time.monotonic() + 180
    while task.state == "running" and time.monotonic() < deadline:
        time.sleep(0.1)  # Slicer's event loop, between the timer's polls
        timer.fire()
    assert task.state == "done", task.worker.state.log[-5:]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and "progress" in kinds and kinds[-1] == "imported"
    rows = task.results.table.GetTable()
    values = {rows.GetValue(r, 0).ToString(): rows.GetValue(r, 1).ToString() for r in range(rows.GetNumberOfRows())}
    assert float(values["HC"]) == pytest.approx(sample.info["reference_hc_mm"], abs=8.0)
    segment = task.results.segmentation.GetSegmentation().GetNthSegment(0)
    assert segment.GetName() == "Head"
    assert task.results.segmentation.GetAttribute("FetalHeadSeg.model_id") == "hc18-plane-2d"


class FakePyTorchUtils:
    """PyTorchUtils' logic: what installTorch does (returns torch or None, or raises as pip does when offline)."""

    def __init__(self, install_result: Any, installs: str | None = None, error: Exception | None = None) -> None:
        self.install_result, self.installs, self.error = install_result, installs, error
        self.install_calls: list[str] = []
        self.versions: dict[str, str | None] = {}

    def PyTorchUtilsLogic(self) -> FakePyTorchUtils:  # noqa: N802 - the extension's name
        return self

    def torchInstalled(self) -> bool:  # noqa: N802
        raise AssertionError("torchInstalled() imports torch into Slicer")

    def installTorch(self, askConfirmation: bool, torchVersionRequirement: str) -> Any:  # noqa: N802, N803
        self.install_calls.append(torchVersionRequirement)
        if self.error is not None:
            raise self.error
        if self.installs is not None:
            self.versions["torch"] = self.installs
        return self.install_result


def test_torch_comes_only_through_the_pytorch_extension(application: Application, monkeypatch) -> None:
    """torch's version is read from its metadata (never imported into Slicer); PyTorchUtils installs it."""
    from FetalHeadSegSlicer import installer

    versions: dict[str, str | None] = {"torch": None}
    monkeypatch.setattr(installer, "installed_version", lambda name: versions.get(name))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # extension not installed
    with pytest.raises(InstallError, match="Extensions Manager") as missing:
        installer.ensure_torch()
    assert not missing.value.restart_required
    versions["torch"] = "2.4.1"
    installer.ensure_torch()  # recent enough: PyTorchUtils is not even needed
    versions["torch"] = "2.0.1"  # left by another extension: too old
    declined = FakePyTorchUtils(install_result=None)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", declined)
    with pytest.raises(InstallError, match="not installed"):
        installer.ensure_torch()
    assert declined.install_calls == [">=2.2"]
    offline = FakePyTorchUtils(install_result=None, error=subprocess.CalledProcessError(1, ["pip", "install"]))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", offline)
    with pytest.raises(InstallError, match="Installing PyTorch failed"):
        installer.ensure_torch()
    later = FakePyTorchUtils(install_result=object())  # installed, but the old one stays loaded until a restart
    monkeypatch.setitem(sys.modules, "PyTorchUtils", later)
    with pytest.raises(InstallError, match="[Rr]estart") as restart:
        installer.ensure_torch()
    assert restart.value.restart_required
    now = FakePyTorchUtils(install_result=object(), installs="2.5.0")
    monkeypatch.setattr(installer, "installed_version", lambda name: now.versions.get(name, versions.get(name)))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", now)
    installer.ensure_torch()
    assert now.install_calls == [">=2.2"]


def test_missing_packages_are_installed_once_after_one_confirmation(
    application: Application, tmp_path, monkeypatch
) -> None:
    from FetalHeadSegSlicer import installer

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\npytest>=1.0\nno-such-package-fetalheadseg>=1.0\n")
    application.confirm_answer = False
    with pytest.raises(InstallError, match="not installed"):
        installer.ensure_requirements(requirements)
    assert application.pip_installed == [] and "no-such-package-fetalheadseg" in application.questions[-1]
    assert "pytest" not in application.questions[-1]  # satisfied requirements are not asked for
    application.confirm_answer = True
    installer.ensure_requirements(requirements)
    assert application.pip_installed == [["no-such-package-fetalheadseg>=1.0"]]

    def offline(requirements: list[str]) -> None:  # slicer.util.pip_install raises when pip fails
        raise subprocess.CalledProcessError(1, ["pip", "install", *requirements])

    monkeypatch.setattr(sys.modules["slicer"].util, "pip_install", offline)
    with pytest.raises(InstallError, match="not installed"):
        installer.ensure_requirements(requirements)
    requirements.write_text("pytest>=1.0\n")
    asked = len(application.questions)
    installer.ensure_requirements(requirements)
    assert len(application.questions) == asked and len(application.pip_installed) == 1  # nothing to do
    calls: list[Any] = []

    def pip_ensure(requirements: list[str], prompt_install: bool, requester: str, skip_in_testing: bool) -> None:
        calls.append((requirements, prompt_install, skip_in_testing))
        if not application.confirm_answer:
            raise RuntimeError("User declined package installation")

    packaging = types.ModuleType("slicer.packaging")  # Slicer >= 5.12: a submodule that must be imported
    packaging.load_requirements = lambda path: ["pytest>=1.0"]  # type: ignore[attr-defined]
    packaging.pip_ensure = pip_ensure  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    installer.ensure_requirements(requirements, interactive=False)
    assert calls == [(["pytest>=1.0"], False, False)] and len(application.pip_installed) == 1
    application.confirm_answer = False
    with pytest.raises(InstallError, match="declined"):
        installer.ensure_requirements(requirements)


def test_the_logic_installs_before_it_segments(application: Application, module: Any) -> None:
    calls: list[str] = []
    fake_installer = types.SimpleNamespace(
        ensure_torch=lambda interactive: calls.append(f"torch interactive={interactive}"),
        ensure_requirements=lambda path, interactive: calls.append(Path(path).name),
    )
    logic = module.FetalHeadSegLogic(installer=fake_installer, pythonExecutable=sys.executable)
    logic.setupPythonRequirements(interactive=False)
    assert calls == ["torch interactive=False", "requirements.txt"]
    descriptions = dict(logic.modelDescriptions())
    assert set(descriptions) >= {"fetal-head-3d-cascade", "hc18-plane-2d", "psfhs-intrapartum-2d"}
    assert "per case on a 2-core CPU" in descriptions["hc18-plane-2d"]


def test_every_frame_of_a_sequence_is_segmented_into_the_same_browser(application: Application, module: Any) -> None:
    """Three frames (the HC18 sample, its mirror image, a blank frame) through one real worker."""
    sample = get_sample("hc18_207_HC")
    image = read_image(sample.image_path)
    scene = application.scene
    frames = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    frames.SetIndexName("time")
    frames.SetIndexUnit("s")
    pictures = [image.array, image.array[::-1].copy(), np.full_like(image.array, 7)]
    for index, picture in enumerate(pictures):
        frame = slicer_core.vtkMRMLScalarVolumeNode()
        frame.SetAndObserveImageData(slicer_fakes.vtk_image(picture.astype(np.float32)))
        frame.SetIJKToRASMatrix(slicer_fakes.vtk_matrix(image.ijk_to_ras))
        frames.SetDataNodeAtValue(frame, f"{0.5 * index:g}")
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
    browser.SetAndObserveMasterSequenceNodeID(frames.GetID())
    sys.modules["slicer"].modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(frames)
    proxy.SetName("cine")
    logic = module.FetalHeadSegLogic(pythonExecutable=sys.executable)
    assert logic.sequenceOf(proxy) == (browser, frames)
    events: list[dict[str, Any]] = []
    task = logic.process(
        proxy,
        options=RunOptions(device="cpu", pixel_size_mm=sample.info["pixel_size_mm"]),
        allFrames=True,
        waitForCompletion=True,
        eventCallback=events.append,
    )
    assert task.state == "done" and task.results.frames == 2
    assert any("1 frame(s) could not be segmented" in warning for warning in events[-1]["warnings"])
    output = task.results.sequence
    assert output.GetNumberOfDataNodes() == 2 and output.GetIndexName() == "time"
    assert [output.GetNthIndexValue(i) for i in range(2)] == ["0", "0.5"]
    assert browser.GetProxyNode(output) is task.results.segmentation
    assert task.results.segmentation.GetName() == "cine fetal head"
    table = task.results.table.GetTable()
    headings = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert headings[:4] == ["time (s)", "HC (mm)", "BPD outer-outer (mm)", "OFD (mm)"] and headings[-1] == "flags"
    assert table.GetNumberOfRows() == 2
    hc = [float(table.GetValue(row, 1).ToString()) for row in range(2)]
    assert hc[0] == pytest.approx(sample.info["reference_hc_mm"], abs=8.0)
    assert hc[1] == pytest.approx(hc[0], abs=3.0)  # the mirrored frame measures the same head
    browser.SetSelectedItemNumber(2)  # the blank frame, which could not be segmented
    sys.modules["slicer"].modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
    shown = browser.GetProxyNode(output)
    assert shown.GetSegmentation().GetNumberOfSegments() == 0  # not the previous frame's head
    browser.SetSelectedItemNumber(0)
    sys.modules["slicer"].modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
    assert browser.GetProxyNode(output).GetSegmentation().GetNumberOfSegments() == 1


def test_the_modules_self_test_passes(application: Application, module: Any) -> None:
    """FetalHeadSegTest, which Slicer's ctest runs, on the same logic path (real worker, shipped 3D model)."""
    result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(module.FetalHeadSegTest("runTest"))
    assert result.wasSuccessful(), [str(error) for _, error in result.failures + result.errors]


def test_the_panel_binds_its_widgets_and_enables_apply(application: Application, module: Any) -> None:
    """The widget built from the real .ui under Slicer's binding rules (a str bound to a combo box needs Choice)."""
    widget = module.FetalHeadSegWidget()
    widget.setup()
    ui, parameters = widget.ui, widget._parameterNode
    assert not ui.applyButton.enabled  # no volume yet
    volume = _add_volume(application.scene, get_sample("phantom3d_s000001").image_path, "phantom")
    ui.inputVolumeSelector.setCurrentNode(volume)
    assert parameters.inputVolume is volume and ui.applyButton.enabled
    assert [ui.deviceComboBox.itemText(i) for i in range(ui.deviceComboBox.count)] == ["auto", "cpu", "gpu"]
    models = [ui.modelIdComboBox.itemText(i) for i in range(ui.modelIdComboBox.count)]
    assert models[0] == "" and {"hc18-plane-2d", "psfhs-intrapartum-2d"} <= set(models)
    assert "per case" in ui.modelIdComboBox.itemData(models.index("hc18-plane-2d"), 3)  # tooltips are kept
    ui.modelIdComboBox.currentIndex = models.index("hc18-plane-2d")
    assert parameters.modelId == "hc18-plane-2d"
    parameters.modelId = "psfhs-intrapartum-2d"  # e.g. a script, or a scene that is loaded
    assert ui.modelIdComboBox.currentText == "psfhs-intrapartum-2d"
    widget.models.populate()  # after an import: the list is rebuilt, the choice stays
    assert ui.modelIdComboBox.currentText == parameters.modelId == "psfhs-intrapartum-2d"
    ui.pixelSizeSpinBox.value = 0.1
    assert parameters.pixelSizeMm == pytest.approx(0.1)
    flips = ui.testTimeFlipsComboBox
    assert [flips.itemText(i) for i in range(flips.count)] == ["auto", "on", "off"]
    assert (
        flips.currentText == parameters.testTimeFlips == "auto" and RunOptions.from_parameters(parameters).tta is None
    )
    flips.currentIndex = 2
    assert parameters.testTimeFlips == "off" and RunOptions.from_parameters(parameters).tta is False
    parameters.testTimeFlips = "on"
    assert flips.currentText == "on" and RunOptions.from_parameters(parameters).tta is True
    widget.exit()
    widget.enter()  # bound again on every visit of the module
    assert ui.modelIdComboBox.currentText == "psfhs-intrapartum-2d" and ui.applyButton.enabled
    widget.cleanup()


def _world_to_ijk(volume: Any) -> np.ndarray:
    """World RAS -> the volume's IJK, through its parent transforms."""
    ijk_to_ras, to_world = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    slicer_core.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(volume.GetParentTransformNode(), None, to_world)
    return np.linalg.inv(
        slicer_core.util.arrayFromVTKMatrix(to_world) @ slicer_core.util.arrayFromVTKMatrix(ijk_to_ras)
    )


def _voxels(points_world: np.ndarray, volume: Any) -> np.ndarray:
    homogeneous = np.c_[points_world, np.ones(len(points_world))]
    return np.rint((homogeneous @ _world_to_ijk(volume).T)[:, :3]).astype(int)


def _segment_voxels_world(segmentation: Any) -> np.ndarray:
    """World RAS of every voxel of the segmentation's first segment."""
    from vtk.util import numpy_support

    image = slicer_core.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segmentation.GetSegmentation().GetNthSegmentID(0), image)
    dims = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).transpose(2, 1, 0)
    extent = image.GetExtent()
    ijk = np.argwhere(values > 0) + [extent[0], extent[2], extent[4]]
    image_to_node, node_to_world = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(image_to_node)
    slicer_core.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
        segmentation.GetParentTransformNode(), None, node_to_world
    )
    matrix = slicer_core.util.arrayFromVTKMatrix(node_to_world) @ slicer_core.util.arrayFromVTKMatrix(image_to_node)
    return (np.c_[ijk, np.ones(len(ijk))] @ matrix.T)[:, :3]


def _assert_on_the_head(task: Any, volume: Any, head: np.ndarray) -> None:
    """The segmentation covers ``head`` (a mask on the volume's voxels) and the calipers lie on its outline, in RAS."""
    from scipy import ndimage

    inside = _voxels(_segment_voxels_world(task.results.segmentation), volume)
    valid = np.all((inside >= 0) & (inside < head.shape), axis=1)
    hits = head[tuple(inside[valid].T)]
    assert valid.mean() > 0.99 and hits.mean() > 0.9, "the segmentation is not drawn over the head"
    assert 0.8 < len(inside) / head.sum() < 1.25
    extent = max(np.ptp(np.argwhere(head), axis=0))
    band = ndimage.binary_dilation(head, iterations=max(2, int(0.05 * extent))) & ~ndimage.binary_erosion(
        head, iterations=max(2, int(0.05 * extent))
    )
    for name, markup in task.results.markups.items():
        if name == "plane":
            continue
        points = np.array([markup.GetNthControlPointPositionWorld(i) for i in range(markup.GetNumberOfControlPoints())])
        ijk = np.clip(_voxels(points, volume), 0, np.array(head.shape) - 1)
        assert band[tuple(ijk.T)].mean() > 0.95, f"the {name} markup is not on the head's outline"
    table = task.results.table.GetTable()
    rows = {table.GetValue(r, 0).ToString(): float(table.GetValue(r, 1).ToString() or "nan") for r in range(4)}
    assert task.results.markups["BPD"].GetLineLengthWorld() == pytest.approx(rows["BPD"], rel=0.01)  # rulers agree


def test_a_frame_with_a_pixel_size_is_drawn_on_the_head(application: Application, module: Any) -> None:
    """A PNG frame (1 mm in Slicer) with the panel's pixel size: results lie on the head, and lengths are in mm."""
    from scipy import ndimage

    sample = get_sample("hc18_207_HC")
    volume = _add_volume(application.scene, sample.image_path, "frame")
    head = ndimage.binary_fill_holes(read_image(sample.annotation_path).array[:, :, 0] > 0)[:, :, None]  # outline
    logic = module.FetalHeadSegLogic(pythonExecutable=sys.executable)
    pixel = sample.info["pixel_size_mm"]
    task = logic.process(volume, options=RunOptions(device="cpu", pixel_size_mm=pixel), waitForCompletion=True)
    assert task.state == "done"
    assert "--spacing" not in task.worker.command  # the file the worker reads carries the pixel size
    assert volume.GetSpacing()[:2] == pytest.approx((pixel, pixel))  # the frame Slicer shows has it too
    _assert_on_the_head(task, volume, head)


def test_a_transformed_volume_has_its_results_under_the_same_transform(application: Application, module: Any) -> None:
    """A 3D volume under a parent transform (tracked ultrasound): segmentation and markups follow it."""
    sample = get_sample("phantom3d_s000001")
    volume = _add_volume(application.scene, sample.image_path, "phantom")
    transform = application.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "ImageToReference")
    matrix = vtk.vtkMatrix4x4()
    rotation = vtk.vtkTransform()
    rotation.Translate(40.0, -25.0, 60.0)
    rotation.RotateWXYZ(35.0, 0.3, 1.0, 0.2)
    rotation.GetMatrix(matrix)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    logic = module.FetalHeadSegLogic(workerFactory=TruthMaskWorker(sample.annotation_path))
    task = logic.process(volume, waitForCompletion=True)
    assert task.state == "done"
    _assert_on_the_head(task, volume, read_image(sample.annotation_path).array > 0)


def test_the_run_ends_only_after_the_last_output_line_is_read(
    application: Application, module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker exits before its reader threads have queued its last lines (the order Slicer's GIL allows)."""
    import threading

    from FetalHeadSegSlicer import runner

    hold = threading.Event()
    monkeypatch.setattr(runner.WorkerProcess, "_read", slicer_fakes.late_reader(hold))
    sample = get_sample("hc18_207_HC")
    volume = _add_volume(application.scene, sample.image_path, "frame")
    logic = module.FetalHeadSegLogic(pythonExecutable=sys.executable)
    options = RunOptions(device="cpu", pixel_size_mm=sample.info["pixel_size_mm"])
    task = logic.process(volume, options=options, waitForCompletion=False)
    task.worker._process.wait(120)  # the worker has exited ...
    timer = application.timers[-1]
    timer.fire()
    assert task.state == "running"  # ... but its result line has not been read: not finished yet
    hold.set()
    deadline = time.monotonic() + 30
    while task.state == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        timer.fire()
    assert task.state == "done", task.message


def test_the_module_loads_and_sets_up_without_torch_or_scikit_image() -> None:
    """In a fresh interpreter: importing the module and building its panel must not import torch (the worker's
    job) or scikit-image (installed on first Apply)."""
    import os

    environment = {**os.environ, "FETALHEADSEG_ISOLATED_PANEL": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::test_isolated_panel_setup"]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout[-2000:]
    assert "1 passed" in finished.stdout


def test_isolated_panel_setup(application: Application, module: Any) -> None:
    import os

    if not os.environ.get("FETALHEADSEG_ISOLATED_PANEL"):
        pytest.skip("run in a fresh interpreter by test_the_module_loads_and_sets_up_without_torch_or_scikit_image")
    widget = module.FetalHeadSegWidget()
    widget.setup()
    assert widget.ui.modelIdComboBox.count > 1  # the model list was read (from bundle.json files only)
    assert "torch" not in sys.modules and "skimage" not in sys.modules
