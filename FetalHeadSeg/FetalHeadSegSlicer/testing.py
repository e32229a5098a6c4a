"""A stand-in worker for the module's self-test where torch is not installed: same protocol, same output files,
made from the bundled phantom's exact head mask instead of a network (so the Slicer side is fully exercised)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from FetalHeadSegSlicer.runner import WorkerState


class TruthMaskWorker:
    """Writes ``<stem>.seg.nrrd`` and ``<stem>_biometry.json`` from a known mask and reports like the worker."""

    def __init__(self, mask_path: Path) -> None:
        self.mask_path = mask_path

    def __call__(
        self,
        command: list[str],
        environment: dict[str, str] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> TruthMaskWorker:
        from FetalHeadSegLib.biometry import measure_biometry
        from FetalHeadSegLib.cli.biometry_command import output_stem
        from FetalHeadSegLib.io import read_image
        from FetalHeadSegLib.labels import HEAD
        from FetalHeadSegLib.segfile import write_seg_nrrd

        self.state = WorkerState()
        self.returncode = 0
        self.finished = True  # everything below is reported before this returns
        source = Path(command[4])
        output = Path(command[command.index("-o") + 1])
        mask = read_image(self.mask_path)
        stem = output_stem(source)
        labels = write_seg_nrrd(mask, [HEAD], output / f"{stem}.seg.nrrd")
        record = {
            "input": str(source),
            **measure_biometry(mask).to_dict(),
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
        events = [
            {"event": "start", "input": str(source), "model_id": "truth-mask (self-test)"},
            {"event": "progress", "input": str(source), "stage": "stage1", "fraction": 1.0, "message": ""},
            {
                "event": "result",
                "input": str(source),
                "outputs": {"labels": str(labels), "biometry": str(biometry)},
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
