"""The Slicer module's worker runner, with real worker processes (no Slicer needed)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from FetalHeadSegLib.core.io import write_image
from FetalHeadSegLib.inference.request import SegmentRequest
from FetalHeadSegLib.phantom import PhantomConfig, generate_phantom

from tiny_models import make_tiny_bundle

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY / "FetalHeadSeg"))

from FetalHeadSegSlicer.runner import WorkerProcess, worker_command  # noqa: E402


def test_worker_runs_and_reports_progress_and_results(tmp_path: Path) -> None:
    volume = write_image(generate_phantom(PhantomConfig(dimension=3, size=(40, 40, 32)), 5).image, tmp_path / "v.nrrd")
    model = make_tiny_bundle(tmp_path / "model").path
    request = SegmentRequest((str(volume),), tmp_path / "out", str(model), device="cpu", ga_weeks=24.0)
    command = worker_command(sys.executable, request)
    assert command[1:4] == ["-m", "FetalHeadSegLib", "segment"] and "--ga-weeks" in command
    threads = int(command[command.index("--threads") + 1])
    assert threads == max(1, (os.cpu_count() or 2) - 1)  # one core left for Slicer
    seen: list[str] = []
    worker = WorkerProcess(command, {"PYTHONPATH": str(REPOSITORY)}, on_event=lambda e: seen.append(e["event"]))
    state = worker.wait(timeout=120)
    assert worker.returncode == 0, state.log
    assert seen[0] == "start" and seen[-1] == "done" and "progress" in seen
    assert state.fraction >= 0.0 and state.error is None
    assert state.result is not None and Path(state.result["outputs"]["labels"]).exists()


def test_a_bad_input_ends_with_the_error_message(tmp_path: Path) -> None:
    model = make_tiny_bundle(tmp_path / "model").path
    request = SegmentRequest((str(tmp_path / "missing.nii.gz"),), tmp_path / "out", str(model), device="cpu")
    worker = WorkerProcess(worker_command(sys.executable, request), {"PYTHONPATH": str(REPOSITORY)})
    state = worker.wait(timeout=120)
    assert worker.returncode == 2
    assert state.error is not None and "no such file" in state.error
    assert state.error_code == "InputImageError"  # the panel maps it to advice


def test_cancel_kills_the_whole_process_tree(tmp_path: Path) -> None:
    """A launcher that starts a child (as PythonSlicer does): cancel must stop both."""
    import psutil

    script = (
        "import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); print(child.pid, flush=True); time.sleep(60)"
    )
    worker = WorkerProcess([sys.executable, "-c", script])
    deadline = time.time() + 20
    while not worker.poll().log and time.time() < deadline:
        time.sleep(0.05)
    child = int(worker.state.log[0])
    assert psutil.pid_exists(child)
    worker.cancel()
    time.sleep(0.3)
    assert worker.returncode is not None
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("biometry", [True, False])
def test_command_options(tmp_path: Path, biometry: bool) -> None:
    request = SegmentRequest(
        (str(tmp_path / "a.nrrd"),), tmp_path, None, biometry=biometry, tta=True, spacing_mm=(0.12,)
    )
    command = worker_command("PythonSlicer", request)
    assert ("--no-biometry" in command) != biometry and "--tta" in command and command[0] == "PythonSlicer"
    assert "--model" not in command and command[command.index("--spacing") + 1] == "0.12"


def test_the_run_is_finished_only_when_its_output_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process exits before the reader threads queue its lines (as under Slicer's GIL): not finished yet."""
    import threading

    import slicer_fakes

    hold = threading.Event()
    monkeypatch.setattr(WorkerProcess, "_read", slicer_fakes.late_reader(hold))
    worker = WorkerProcess([sys.executable, "-c", 'print(\'{"event": "result", "outputs": {}}\')'])
    worker._process.wait(30)
    assert worker.returncode == 0 and worker.poll().result is None and not worker.finished
    hold.set()
    state = worker.wait(30)
    assert worker.finished and state.result == {"event": "result", "outputs": {}}


def test_undecodable_output_does_not_stop_the_reader() -> None:
    """A byte that is not UTF-8 (a path in the Windows code page) is replaced; the lines after it still arrive."""
    script = (
        "import sys; sys.stdout.buffer.write(b'C:\\\\Users\\\\J\\xf6rg\\n'); sys.stdout.flush(); "
        'print(\'{"event": "result", "outputs": {}}\')'
    )
    worker = WorkerProcess([sys.executable, "-c", script])
    state = worker.wait(30)
    assert worker.finished and state.result is not None
    assert state.log[0] == "C:\\Users\\J\ufffdrg"
