"""The module's Logic driven as Slicer drives it, without the application (``slicer.md`` §11.5).

``slicer`` here is the slicer-core wheel (real MRML) with the application parts Slicer adds at run time replaced by
recording stand-ins (``slicer.util`` dialogs and pip, ``slicer.app``, the ScriptedLoadableModule bases, ``qt``).
Covered: the install decisions and restart handling, the task's state machine and cancel, the error-code to
message mapping, warnings reaching the user, and a real worker process whose results land in the scene without
any network access.
"""

from __future__ import annotations

import contextlib
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

from FetalHeadSegLib.io import read_image
from FetalHeadSegLib.samples import get_sample

slicer_core = pytest.importorskip("slicer")
if not hasattr(slicer_core, "vtkMRMLScene"):
    pytest.skip("this 'slicer' is not Slicer's MRML (install slicer-core)", allow_module_level=True)

REPOSITORY = Path(__file__).resolve().parents[1]
MODULE_FILE = REPOSITORY / "FetalHeadSeg" / "FetalHeadSeg.py"
sys.path.insert(0, str(REPOSITORY / "FetalHeadSeg"))

from FetalHeadSegSlicer.installer import InstallError  # noqa: E402
from FetalHeadSegSlicer.runner import WorkerState  # noqa: E402
from FetalHeadSegSlicer.scene import _vtk_image, _vtk_matrix  # noqa: E402
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


def _try_with_error_display(application: Application) -> Callable[..., Any]:
    """slicer.util.tryWithErrorDisplay: shows the error (recorded here) instead of raising it."""

    @contextlib.contextmanager
    def display(message: str, waitCursor: bool = False) -> Iterator[None]:  # noqa: N803 - Slicer's name
        try:
            yield
        except Exception as err:
            application.errors.append(f"{message} {err}")

    return display


@pytest.fixture
def application(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Application:
    """Fake Slicer application modules in ``sys.modules`` (restored afterwards) around the real MRML."""
    app = Application(tmp_path)
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = slicer_core.util.VTKObservationMixin  # type: ignore[attr-defined]
    util.tempDirectory = app.temp_directory  # type: ignore[attr-defined]
    util.confirmOkCancelDisplay = app.confirm  # type: ignore[attr-defined]
    util.errorDisplay = app.errors.append  # type: ignore[attr-defined]
    util.pip_install = app.pip_installed.append  # type: ignore[attr-defined]
    util.tryWithErrorDisplay = _try_with_error_display(app)  # type: ignore[attr-defined]
    util.loadVolume = lambda path: _add_volume(app.scene, Path(path), Path(path).name.split(".")[0])  # type: ignore[attr-defined]

    fake = types.ModuleType("slicer")
    fake.__getattr__ = lambda name: getattr(slicer_core, name)  # type: ignore[attr-defined]
    fake.util = util  # type: ignore[attr-defined]
    fake.mrmlScene = app.scene  # type: ignore[attr-defined]
    fake.app = types.SimpleNamespace(connect=lambda *args: None)  # type: ignore[attr-defined]
    sequences = slicer_core.vtkSlicerSequencesLogic()
    sequences.SetMRMLScene(app.scene)
    fake.modules = types.SimpleNamespace(  # type: ignore[attr-defined]
        sequences=types.SimpleNamespace(logic=lambda: sequences)
    )

    bases = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleLogic:
        def getParameterNode(self) -> Any:  # noqa: N802 - Slicer's name
            return app.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")

    bases.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {})  # type: ignore[attr-defined]
    bases.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})  # type: ignore[attr-defined]
    bases.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic  # type: ignore[attr-defined]
    bases.ScriptedLoadableModuleTest = type(  # type: ignore[attr-defined]
        "ScriptedLoadableModuleTest", (unittest.TestCase,), {"delayDisplay": lambda self, message: None}
    )
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls  # type: ignore[attr-defined]
    wrapper.Choice = wrapper.WithinRange = lambda *args: None  # type: ignore[attr-defined]
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text  # type: ignore[attr-defined]
    i18n.translate = lambda context, text: text  # type: ignore[attr-defined]
    qt = types.ModuleType("qt")
    qt.QTimer = app.timer  # type: ignore[attr-defined]

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
def module(application: Application) -> Any:
    """FetalHeadSeg/FetalHeadSeg.py imported under the fake application."""
    spec = importlib.util.spec_from_file_location("FetalHeadSeg_under_test", MODULE_FILE)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def _add_volume(scene: Any, path: Path, name: str) -> Any:
    image = read_image(path)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    volume.SetAndObserveImageData(_vtk_image(image.array.astype(np.float32)))
    volume.SetIJKToRASMatrix(_vtk_matrix(image.ijk_to_ras))
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
    task = logic.process(volume, waitForCompletion=False, eventCallback=events.append, testTimeAugmentation=True)
    assert task["state"] == "running" and "--tta" in worker.command
    exported = task["temporary"] / "input.nrrd"
    assert read_image(exported).shape == (112, 112, 112)  # the volume as the worker reads it
    timer = application.timers[-1]
    timer.fire()  # the worker is still running: nothing happens
    assert task["state"] == "running" and timer.active
    logic.cancel(task)
    assert worker.cancelled and task["state"] == "cancelled" and not timer.active
    assert not task["temporary"].exists()
    worker.returncode = -9  # the killed worker's end, seen by a late poll, changes nothing
    logic._poll(task)
    assert task["state"] == "cancelled" and _segmentations(application.scene) == 0 and events == []


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
    assert task["state"] == "failed" and expected in task["message"]
    assert events == [{"event": "failed", "message": task["message"]}]
    assert _segmentations(application.scene) == 0 and not task["temporary"].exists()
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
    assert task["state"] == "done" and events[-1]["event"] == "imported"
    assert any("ran out of memory" in w for w in events[-1]["warnings"])
    segmentation = task["segmentation"]
    assert segmentation.GetName() == "phantom fetal head"
    assert segmentation.GetAttribute("FetalHeadSeg.model_id") == "truth-mask (self-test)"
    table = task["table"].GetTable()
    bpd = float(table.GetValue(1, 1).ToString())
    assert task["markups"]["BPD"].GetLineLengthWorld() == pytest.approx(bpd, abs=0.01)
    assert not task["temporary"].exists()


def test_results_go_into_the_input_volumes_study(application: Application, module: Any) -> None:
    sample = get_sample("phantom3d_s000001")
    hierarchy = slicer_core.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(application.scene)
    study = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Patient 1 study")
    volume = _add_volume(application.scene, sample.image_path, "phantom")
    hierarchy.CreateItem(study, volume)
    logic = module.FetalHeadSegLogic(workerFactory=TruthMaskWorker(sample.annotation_path))
    task = logic.process(volume, waitForCompletion=True)
    parent = hierarchy.GetItemParent
    assert parent(hierarchy.GetItemByDataNode(task["segmentation"])) == study
    folder = parent(hierarchy.GetItemByDataNode(task["table"]))
    assert hierarchy.GetItemName(folder) == "phantom biometry" and parent(folder) == study
    for node in task["markups"].values():
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
        device="cpu",
        pixelSizeMm=sample.info["pixel_size_mm"],
        waitForCompletion=False,
        eventCallback=events.append,
    )
    timer, deadline = application.timers[-1], time.monotonic() + 180
    while task["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)  # Slicer's event loop, between the timer's polls
        timer.fire()
    assert task["state"] == "done", task["worker"].state.log[-5:]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and "progress" in kinds and kinds[-1] == "imported"
    rows = task["table"].GetTable()
    values = {rows.GetValue(r, 0).ToString(): rows.GetValue(r, 1).ToString() for r in range(rows.GetNumberOfRows())}
    assert float(values["HC"]) == pytest.approx(sample.info["reference_hc_mm"], abs=8.0)
    segment = task["segmentation"].GetSegmentation().GetNthSegment(0)
    assert segment.GetName() == "Head"
    assert task["segmentation"].GetAttribute("FetalHeadSeg.model_id") == "hc18-plane-2d"


class FakePyTorchUtils:
    """PyTorchUtils' logic: torch installed or not, and what installTorch answers."""

    def __init__(self, installed: bool, install_result: Any) -> None:
        self.installed, self.install_result, self.install_calls = installed, install_result, 0

    def PyTorchUtilsLogic(self) -> FakePyTorchUtils:  # noqa: N802 - the extension's name
        return self

    def torchInstalled(self) -> bool:  # noqa: N802
        return self.installed

    def installTorch(self, askConfirmation: bool, torchVersionRequirement: str) -> Any:  # noqa: N802, N803
        self.install_calls += 1
        return self.install_result


def test_torch_comes_only_through_the_pytorch_extension(application: Application, monkeypatch) -> None:
    from FetalHeadSegSlicer import installer

    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # extension not installed
    with pytest.raises(InstallError, match="Extensions Manager") as missing:
        installer.ensure_torch()
    assert not missing.value.restart_required
    present = FakePyTorchUtils(installed=True, install_result=None)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", present)
    installer.ensure_torch()
    assert present.install_calls == 0  # never reinstalled
    declined = FakePyTorchUtils(installed=False, install_result=None)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", declined)
    with pytest.raises(InstallError, match="not installed"):
        installer.ensure_torch()
    installed_now = FakePyTorchUtils(installed=False, install_result=object())
    monkeypatch.setitem(sys.modules, "PyTorchUtils", installed_now)
    monkeypatch.setitem(sys.modules, "torch", None)  # installed, but not importable until Slicer restarts
    with pytest.raises(InstallError, match="[Rr]estart") as restart:
        installer.ensure_torch()
    assert restart.value.restart_required and installed_now.install_calls == 1


def test_missing_packages_are_installed_once_after_one_confirmation(application: Application, tmp_path) -> None:
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
    requirements.write_text("pytest>=1.0\n")
    asked = len(application.questions)
    installer.ensure_requirements(requirements)
    assert len(application.questions) == asked and len(application.pip_installed) == 1  # nothing to do
    calls: list[Any] = []
    sys.modules["slicer"].packaging = types.SimpleNamespace(  # Slicer >= 5.11
        load_requirements=lambda path: ["pytest>=1.0"], pip_ensure=lambda reqs, requester: calls.append(reqs)
    )
    installer.ensure_requirements(requirements)
    assert calls == [["pytest>=1.0"]] and len(application.pip_installed) == 1


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
        frame.SetAndObserveImageData(_vtk_image(picture.astype(np.float32)))
        frame.SetIJKToRASMatrix(_vtk_matrix(image.ijk_to_ras))
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
        device="cpu",
        pixelSizeMm=sample.info["pixel_size_mm"],
        allFrames=True,
        waitForCompletion=True,
        eventCallback=events.append,
    )
    assert task["state"] == "done" and task["frames"] == 2
    assert "1 frame(s) could not be segmented" in events[-1]["warnings"][0]
    output = task["sequence"]
    assert output.GetNumberOfDataNodes() == 2 and output.GetIndexName() == "time"
    assert [output.GetNthIndexValue(i) for i in range(2)] == ["0", "0.5"]
    assert browser.GetProxyNode(output) is task["segmentation"]
    assert task["segmentation"].GetName() == "cine fetal head"
    table = task["table"].GetTable()
    headings = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert headings[:4] == ["time (s)", "HC (mm)", "BPD outer-outer (mm)", "OFD (mm)"] and headings[-1] == "flags"
    assert table.GetNumberOfRows() == 2
    hc = [float(table.GetValue(row, 1).ToString()) for row in range(2)]
    assert hc[0] == pytest.approx(sample.info["reference_hc_mm"], abs=8.0)
    assert hc[1] == pytest.approx(hc[0], abs=3.0)  # the mirrored frame measures the same head


def test_the_modules_self_test_passes(application: Application, module: Any) -> None:
    """FetalHeadSegTest, which Slicer's ctest runs, on the same logic path (real worker, shipped 3D model)."""
    result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(module.FetalHeadSegTest("runTest"))
    assert result.wasSuccessful(), [str(error) for _, error in result.failures + result.errors]
