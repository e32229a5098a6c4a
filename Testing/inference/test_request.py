"""The segment request is one contract: what the Slicer panel asks for is what the command line parses."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from FetalHeadSegLib.cli import build_parser
from FetalHeadSegLib.core.errors import ConfigError
from FetalHeadSegLib.core.spacing import SpacingSource
from FetalHeadSegLib.inference.engine import InferenceOptions
from FetalHeadSegLib.inference.request import ProgressMode, SegmentRequest
from FetalHeadSegLib.report.cohort import ExistingOutputs

REPOSITORY = Path(__file__).resolve().parents[2]

REQUESTS = {
    "defaults": SegmentRequest(("case.nii.gz",), Path("out")),
    "everything": SegmentRequest(
        ("scans/*.nrrd", "more scans", "one.dcm"),
        Path("/tmp/results"),
        model="psfhs-intrapartum-2d",
        device="cuda:1",
        spacing_mm=(0.1, 0.2),
        spacing_csv=Path("pixel sizes.csv"),
        spacing_source=SpacingSource.CSV,
        pixel_units=True,
        existing=ExistingOutputs.OVERWRITE,
        label_format="nii.gz",
        tta=True,
        tile_size=96,
        biometry=False,
        ga_weeks=38.5,
        qc=False,
        threads=3,
        progress=ProgressMode.JSONL,
    ),
    "resume": SegmentRequest(
        ("frame.png",),
        Path("out"),
        spacing_mm=(0.1234567890123,),  # a float's every digit survives the command line
        existing=ExistingOutputs.SKIP,
        ga_weeks=24.0,
        progress=ProgressMode.NONE,
    ),
}


def _parse(argv: list[str]) -> SegmentRequest:
    return SegmentRequest.from_namespace(build_parser().parse_args(["segment", *argv]))


@pytest.mark.parametrize("name", REQUESTS)
def test_a_request_round_trips_through_the_command_line(name: str) -> None:
    request = REQUESTS[name]
    assert _parse(request.to_argv()) == request


def test_the_parsed_request_has_the_commands_defaults_and_meanings() -> None:
    parsed = _parse(["a.nrrd", "-o", "out", "--no-biometry", "--skip-existing", "--spacing", "0.5"])
    assert parsed == SegmentRequest(
        ("a.nrrd",), Path("out"), biometry=False, existing=ExistingOutputs.SKIP, spacing_mm=(0.5,)
    )
    assert parsed.device == "auto" and parsed.label_format == "seg.nrrd" and parsed.progress is ProgressMode.TEXT
    assert parsed.model is None and parsed.threads is None and parsed.qc
    assert parsed.inference_options() == InferenceOptions(tta=None, tile_size=None, biometry=False, ga_weeks=None)


@pytest.mark.parametrize(("tta", "flag"), [(None, None), (True, "--tta"), (False, "--no-tta")])
def test_flips_asked_for_refused_or_left_to_the_model_reach_the_command_line(
    tta: bool | None, flag: str | None
) -> None:
    request = SegmentRequest(("a.png",), Path("out"), tta=tta)
    argv = request.to_argv()
    assert [arg for arg in argv if arg.endswith("tta")] == ([flag] if flag else [])
    assert _parse(argv).tta is tta and _parse(argv).inference_options().tta is tta


def test_the_slicer_worker_command_parses_with_the_clis_own_parser(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPOSITORY / "FetalHeadSeg"))
    from FetalHeadSegSlicer.runner import worker_command

    request = SegmentRequest(
        (str(tmp_path / "input.nrrd"),), tmp_path / "output", model="hc18-plane-2d", device="cpu", tta=True
    )
    command = worker_command("PythonSlicer", request)
    assert command[:4] == ["PythonSlicer", "-m", "FetalHeadSegLib", "segment"]
    parsed = _parse(command[4:])
    assert parsed.progress is ProgressMode.JSONL and parsed.label_format == "seg.nrrd"  # the worker protocol
    assert parsed.threads is not None and parsed.threads >= 1  # a core is left for Slicer
    assert parsed == replace(request, progress=ProgressMode.JSONL, threads=parsed.threads)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tile_size": 12}, "--tile-size must be a positive multiple of 8, got 12"),
        ({"tile_size": 0}, "--tile-size must be a positive multiple of 8"),
        ({"threads": 0}, "--threads must be at least 1, got 0"),
        ({"label_format": "png"}, "--format must be one of seg.nrrd, nii.gz"),
        ({"spacing_source": SpacingSource.NONE}, "--spacing-source must be one of"),
        ({"inputs": ()}, "no input given"),
    ],
)
def test_options_the_command_cannot_run_with_are_refused(changes: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"inputs": ("a.nrrd",), "output": Path("out"), **changes}
    with pytest.raises(ConfigError, match=message):
        SegmentRequest(**arguments)  # type: ignore[arg-type]


def test_the_commands_choices_come_from_the_enums() -> None:
    segment = build_parser()._subparsers._group_actions[0].choices["segment"]  # type: ignore[union-attr]
    choices = {action.dest: action.choices for action in segment._actions if action.choices}
    assert list(choices["format"]) == ["seg.nrrd", "nii.gz"]
    assert list(choices["progress"]) == [mode.value for mode in ProgressMode]
    assert set(choices["spacing_source"]) < {source.value for source in SpacingSource}
