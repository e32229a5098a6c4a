"""Runs the segmentation in a separate process (PythonSlicer -m FetalHeadSegLib segment --progress jsonl).

The worker prints one JSON object per line (``FetalHeadSegLib/report/protocol.py``); everything else it prints is log
text. Slicer never imports torch, so a crash or an out-of-memory error in the worker cannot take Slicer down,
and cancelling kills the worker's whole process tree. No Slicer import: usable and testable anywhere. The worker's
options are a ``FetalHeadSegLib.inference.request.SegmentRequest``: the command line's own contract.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from FetalHeadSegLib.inference.request import ProgressMode, SegmentRequest


def worker_threads() -> int:
    """CPU threads for the worker's networks: every core but one, which stays with Slicer."""
    return max(1, (os.cpu_count() or 2) - 1)


def worker_command(python: str, request: SegmentRequest) -> list[str]:
    """The worker's command line for ``request`` (``python`` is PythonSlicer in Slicer).

    The worker protocol fixes two options whatever the request says: progress as JSON lines on stdout and the
    label map as a ``.seg.nrrd`` (which Slicer loads as a segmentation). Without ``threads``, one core is left for
    Slicer.
    """
    worker_request = replace(
        request,
        progress=ProgressMode.JSONL,
        label_format="seg.nrrd",
        threads=request.threads or worker_threads(),
    )
    return [python, "-m", "FetalHeadSegLib", "segment", *worker_request.to_argv()]


@dataclass
class WorkerState:
    """What the worker has said so far."""

    events: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    fraction: float = 0.0
    stage: str = ""
    result: dict[str, Any] | None = None  # the last ``result`` event
    results: list[dict[str, Any]] = field(default_factory=list)  # every ``result`` event (one per input file)
    error: str | None = None
    error_code: str | None = None  # the library's exception class name, e.g. InputImageError
    last_stderr: str = ""  # the last line the worker wrote to stderr (a crash's exception line)
    warnings: list[dict[str, Any]] = field(default_factory=list)


EOF_MARK = "\0eof"


class WorkerProcess:
    """A running worker: feed its output lines into events with :meth:`poll`, stop it with :meth:`cancel`.

    The run is over when :attr:`finished`: the process has exited *and* both reader threads have reached the end of
    its output. In Slicer these threads run only while the main thread runs Python (Qt's event loop keeps the GIL),
    so the process often exits before its last lines are queued; ending on the exit code alone loses the result.

    Args:
        command: the worker's command line.
        environment: extra environment variables (e.g. PYTHONPATH to find FetalHeadSegLib).
        on_event: called from :meth:`poll` for each JSON event (on the caller's thread, e.g. a Qt timer).
    """

    def __init__(
        self,
        command: list[str],
        environment: dict[str, str] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.command, self.on_event = command, on_event
        self.state = WorkerState()
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._ended_streams = 0
        windows = sys.platform == "win32"
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",  # the worker writes UTF-8 (PYTHONIOENCODING); never the Windows ANSI code page
            errors="replace",  # an undecodable byte must not stop the reader (the pipe would fill and block)
            bufsize=1,
            env={**os.environ, "PYTHONIOENCODING": "utf-8", **(environment or {})},
            cwd=tempfile.gettempdir(),  # python -m puts the working directory first on sys.path
            start_new_session=not windows,  # its own process group: cancel reaches every child
            creationflags=subprocess.CREATE_NO_WINDOW if windows else 0,  # PythonSlicer is a console program
        )
        self._threads = [
            threading.Thread(target=self._read, args=(stream, name), daemon=True)
            for stream, name in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr"))
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, name: str) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\n")))
        self._lines.put((name, EOF_MARK))

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    @property
    def finished(self) -> bool:
        """The process has exited and all its output has been consumed by :meth:`poll`."""
        return self.returncode is not None and self._ended_streams == 2

    def poll(self) -> WorkerState:
        """Consume the lines printed so far (never blocks) and return the updated state."""
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                return self.state
            if line == EOF_MARK:
                self._ended_streams += 1
                continue
            if not line.strip():
                continue
            event = _parse(line) if name == "stdout" else None
            if event is None:
                self.state.log.append(line)
                if name == "stderr":
                    self.state.last_stderr = line
                continue
            self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        state = self.state
        state.events.append(event)
        kind = event.get("event")
        if kind == "progress":
            state.fraction, state.stage = float(event.get("fraction", 0.0)), str(event.get("stage", ""))
        elif kind == "warning":
            state.warnings.append(event)
        elif kind == "result":
            state.result = event
            state.results.append(event)
        elif kind == "error":
            state.error, state.error_code = str(event.get("message")), event.get("code")
        state.log.append(json.dumps(event))
        if self.on_event is not None:
            self.on_event(event)

    def wait(self, timeout: float | None = None) -> WorkerState:
        """Block until the worker ends and its output is read (for scripts and tests), then consume that output.

        ``timeout`` bounds the wait for the process; its reader threads then get up to 5 s more (a child that
        outlives the worker and holds its pipes open must not block Slicer forever).
        """
        self._process.wait(timeout)
        for thread in self._threads:
            thread.join(5.0)
        return self.poll()

    def cancel(self) -> None:
        """Kill the worker and every process it started (PythonSlicer is a launcher: its child does the work)."""
        if self._process.poll() is not None:
            return
        try:
            import psutil
        except ImportError:
            if sys.platform == "win32":
                subprocess.run(
                    ["taskkill", "/T", "/F", "/PID", str(self._process.pid)], check=False, capture_output=True
                )
            else:
                os.killpg(self._process.pid, signal.SIGKILL)
        else:
            try:
                parent = psutil.Process(self._process.pid)
                for child in parent.children(recursive=True):
                    child.kill()
                parent.kill()
            except psutil.NoSuchProcess:
                pass  # it ended on its own meanwhile
        self._process.wait()


def _parse(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None
