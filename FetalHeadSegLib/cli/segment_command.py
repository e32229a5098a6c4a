"""``fetalheadseg segment``: segment and measure images, one file or a whole cohort."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from FetalHeadSegLib.core.errors import ConfigError, FetalHeadSegError
from FetalHeadSegLib.core.tasks import Task
from FetalHeadSegLib.inference.request import ProgressMode, SegmentRequest
from FetalHeadSegLib.models.device import Device
from FetalHeadSegLib.report.cohort import LABEL_SUFFIXES

if TYPE_CHECKING:
    from FetalHeadSegLib.core.image import Image
    from FetalHeadSegLib.core.spacing import SpacingChoice
    from FetalHeadSegLib.inference.engine import Segmentation
    from FetalHeadSegLib.measure.quality import Flag
    from FetalHeadSegLib.report.cohort import Case

ALWAYS_WARN = {"spacing_unknown", "oom_fallback", "model_mismatch_possible", "no_head_found", "biometry_failed"}
"""Flags that are news whatever the review decides (how the run went, not how good the head looks)."""
INTRAPARTUM_HINT = "for an intrapartum (transperineal) frame use --model psfhs-intrapartum-2d"


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "segment",
        help="segment the fetal head and measure it (files, folders or globs)",
        description="Segment the fetal head in 3D volumes or 2D frames (also ultrasound DICOM, cines frame by "
        "frame) and measure it. For each input, writes the label map, the biometry JSON, Slicer markups and a QC "
        "picture, in a folder that mirrors the input's folder below the inputs' common root; and summary.csv. "
        "Outputs that exist are never replaced unless asked (--overwrite, --skip-existing), and no input is ever "
        "written over. A failing input is reported and the others go on; the exit code is 2 if any failed.",
    )
    parser.add_argument("inputs", nargs="+", help="image files, folders of images, or glob patterns")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--model",
        help="model id (see `fetalheadseg models`) or bundle folder (default: the installed model for the "
        f"input's dimension: a standard-plane model for 2D frames; {INTRAPARTUM_HINT})",
    )
    parser.add_argument(
        "--device",
        default=Device.AUTO.value,
        help=f"{', '.join(device.value for device in Device)} or cuda:N (default: {Device.AUTO.value})",
    )
    spacing = parser.add_argument_group("pixel size (lengths are in mm only when it is known)")
    spacing.add_argument("--spacing", type=float, nargs="+", metavar="MM", help="pixel/voxel size for all inputs")
    spacing.add_argument(
        "--spacing-csv",
        type=Path,
        metavar="FILE",
        help="per-file pixel sizes (HC18 style: filename,pixel size(mm)[,...])",
    )
    spacing.add_argument(
        "--spacing-source",
        choices=[source.value for source in _choosable()],
        help="use this source when several give a pixel size and they disagree (otherwise an error)",
    )
    spacing.add_argument(
        "--pixel-units",
        action="store_true",
        help="measure files that carry no pixel size in pixels (keys *_px) instead of refusing them",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    existing.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep the cases whose outputs are complete and do the rest (resumes an interrupted run)",
    )
    parser.add_argument("--format", choices=list(LABEL_SUFFIXES), default="seg.nrrd", help="label map format")
    parser.add_argument("--ga-weeks", type=float, metavar="W", help="known gestational age (z-scores, centiles)")
    parser.add_argument("--no-biometry", action="store_true", help="segment only")
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="test-time flips, averaged into the result: writes <name>_uncertainty.nii.gz and a quality flag "
        "(default: as the model recommends; fetalheadseg models lists which do)",
    )
    parser.add_argument("--tile-size", type=int, metavar="N", help="always predict in tiles of N voxels")
    parser.add_argument("--no-qc", action="store_true", help="do not write the QC picture")
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for the networks (default: torch's, all cores)"
    )
    parser.add_argument(
        "--progress",
        choices=[mode.value for mode in ProgressMode],
        default=ProgressMode.TEXT.value,
        help="progress on stderr as text (default), JSON lines on stdout, or none",
    )
    parser.set_defaults(run=run)


def _choosable() -> tuple[Any, ...]:
    from FetalHeadSegLib.core.spacing import CHOOSABLE

    return CHOOSABLE


class _Reporter:
    """Progress as text on stderr (a live line on a terminal, one line per case in a log), JSON lines on stdout,
    or nothing."""

    def __init__(self, mode: ProgressMode, total: int) -> None:
        self.mode, self.total, self.index, self.name = mode, total, 0, ""
        self.live = mode == "text" and sys.stderr.isatty()
        self.models_named: set[str] = set()

    def start_input(self, index: int, path: Path) -> None:
        self.index, self.name = index, path.name

    def progress(self, stage: str, fraction: float, message: str) -> None:
        from FetalHeadSegLib.report.protocol import emit

        if self.mode == "jsonl":
            emit("progress", input=self.name, stage=stage, fraction=round(fraction, 4), message=message)
        elif self.live:
            overall = (self.index + 0.5) / self.total
            bar = "#" * int(24 * overall)
            text = f"[{bar:<24}] {self.index + 1}/{self.total} {self.name}: {stage} {message}"
            print(f"\r{text[:100]:<100}", end="", file=sys.stderr, flush=True)

    def model(self, model_id: str, version: str, task: str, dimension: int) -> None:
        """Say once per model which one runs (and, for the standard-plane 2D model, how to pick the other)."""
        if self.mode != "text" or model_id in self.models_named:
            return
        self.models_named.add(model_id)
        hint = f"; {INTRAPARTUM_HINT}" if dimension == 2 and task != Task.INTRAPARTUM else ""
        self.line(f"model {model_id} {version} ({dimension}D, task {task}){hint}")

    def event(self, event: str, **fields: Any) -> None:
        from FetalHeadSegLib.report.protocol import emit

        if self.mode == "jsonl":
            emit(event, **fields)
        elif self.mode == "text" and event == "review":
            if fields["recommended"]:
                self.line(
                    f"{self.index + 1}/{self.total} {self.name}: review recommended ({', '.join(fields['reasons'])})"
                )
        elif self.mode == "text" and event in ("result", "error", "warning", "skipped"):
            text = {
                "result": lambda: f"ok ({fields['seconds']:.1f} s)",
                "error": lambda: f"FAILED: {fields['message']}",
                "warning": lambda: f"warning {fields['code']}: {fields['message']}",
                "skipped": lambda: "kept (outputs complete)",
            }[event]()
            self.line(f"{self.index + 1}/{self.total} {self.name}: {text}")

    def line(self, text: str) -> None:
        prefix = f"\r{' ' * 100}\r" if self.live else ""
        print(f"{prefix}{text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """``fetalheadseg segment`` with parsed arguments: the request is built once, here.

    With JSON-lines progress every failure that ends the run is also an ``error`` event on stdout (a supervising
    program such as the Slicer module reads that, never stderr), then raised for the one-line message.
    """
    jsonl = getattr(args, "progress", None) == ProgressMode.JSONL.value
    try:
        return segment_request(SegmentRequest.from_namespace(args))
    except FetalHeadSegError as err:
        if jsonl:
            from FetalHeadSegLib.report.protocol import emit

            emit("error", input=getattr(err, "input", None), code=type(err).__name__, message=str(err))
        raise


def segment_request(request: SegmentRequest) -> int:
    """Segment and measure every input of ``request`` and write their outputs; returns the exit code.

    Raises:
        FetalHeadSegError: with a single input, its failure; with several, only a failure before the first case
            (outputs that exist, an unreadable spacing CSV). Failed cases of a cohort are reported and counted.
    """
    from FetalHeadSegLib.report.cohort import (
        SUMMARY_NAME,
        ExistingOutputs,
        existing_outputs_error,
        expand_inputs,
        plan_cases,
    )
    from FetalHeadSegLib.report.summary import failed_row, write_summary

    cases = plan_cases(expand_inputs(list(request.inputs)), request.output)
    policy = request.existing
    summary_path = request.output / SUMMARY_NAME
    if policy is ExistingOutputs.REFUSE:
        for case in cases:
            if case.existing_outputs():
                raise existing_outputs_error(case)
        if summary_path.exists():
            raise ConfigError(f"{summary_path}: exists already; use --overwrite or --skip-existing")
    spacing_table = _spacing_table(request.spacing_csv)
    _set_threads(request.threads)
    reporter = _Reporter(request.progress, len(cases))
    models = _ModelCache(request.model, request.device)
    rows: list[dict[str, Any]] = []
    failed = 0
    for index, case in enumerate(cases):
        reporter.start_input(index, case.input)
        kept = _complete_rows(case) if policy is ExistingOutputs.SKIP else []
        if kept:
            rows += kept
            reporter.event("skipped", input=str(case.input))
            continue
        try:
            rows += _segment_case(case, request, models, spacing_table, reporter)
        except FetalHeadSegError as err:
            if len(cases) == 1:
                err.input = str(case.input)  # type: ignore[attr-defined]  # for run()'s error event
                raise
            reporter.event("error", input=str(case.input), code=type(err).__name__, message=str(err))
            failed += 1
            rows.append(failed_row(str(case.input), str(err)))
        write_summary(rows, summary_path)
    reporter.event("done", succeeded=len(cases) - failed, failed=failed)
    if request.progress is ProgressMode.TEXT:
        reporter.line(f"{len(cases) - failed} of {len(cases)} segmented; outputs in {request.output}")
    return 0 if failed == 0 else 2


def _set_threads(threads: int | None) -> None:
    """Give the networks ``threads`` CPU threads (checked by the request); None keeps torch's default."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _complete_rows(case: Case) -> list[dict[str, Any]]:
    """Summary rows of a case whose outputs are complete (every cine frame's too); empty when it is not."""
    import json

    from FetalHeadSegLib.report.summary import summary_row

    markers = case.completion_markers()
    rows = []
    for marker in markers:
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if record.get("frames_total") not in (None, len(markers)):
            return []
        rows.append(summary_row(record) | {"outputs": str(marker.parent)})
    return rows


class _ModelCache:
    """Loads each model once: the one named by --model, or the default for each input dimension."""

    def __init__(self, name: str | None, device: str) -> None:
        self.name, self.device = name, device
        self.loaded: dict[Any, Any] = {}

    def get(self, dimension: int) -> Any:
        from FetalHeadSegLib.inference.engine import Segmenter
        from FetalHeadSegLib.models.catalog import default_model, find_model

        key = self.name or dimension
        if key not in self.loaded:
            bundle = find_model(self.name) if self.name else default_model(dimension)
            self.loaded[key] = Segmenter(bundle, self.device)
        return self.loaded[key]


def _segment_case(
    case: Case,
    request: SegmentRequest,
    models: _ModelCache,
    spacing_table: dict[str, float],
    reporter: _Reporter,
) -> list[dict[str, Any]]:
    """Segment one input (every frame of a cine) and write its outputs; returns its summary rows."""
    from FetalHeadSegLib.core.io import read_image_frames
    from FetalHeadSegLib.core.spacing import apply_spacing, choose_spacing

    path = case.input
    read = read_image_frames(path)
    first = read.frames[0]
    choice = choose_spacing(
        str(path),
        read.spacing_source,
        first.spacing_mm[:2] if first.is_2d else first.spacing_mm,
        command_line_mm=request.spacing_mm,
        csv_mm=spacing_table.get(path.name),
        prefer=request.spacing_source,
        allow_pixels=request.pixel_units,
    )
    frames = [apply_spacing(f, choice.spacing_mm) if choice.spacing_mm else f for f in read.frames]
    rows = []
    for number, image in enumerate(frames):
        frame_case = case.with_frame(number) if read.is_cine else case
        frame = number if read.is_cine else None
        extra = {"frame": frame, "frames_total": len(frames)} if read.is_cine else {}
        rows.append(_segment_image(image, frame_case, frame, extra, choice, request, models, reporter))
    return rows


def _segment_image(
    image: Image,
    case: Case,
    frame: int | None,
    extra: dict[str, Any],
    choice: SpacingChoice,
    request: SegmentRequest,
    models: _ModelCache,
    reporter: _Reporter,
) -> dict[str, Any]:
    from FetalHeadSegLib._version import __version__
    from FetalHeadSegLib.measure.quality import Flag, spacing_flags
    from FetalHeadSegLib.report.outputs import case_record, write_outputs
    from FetalHeadSegLib.report.summary import summary_row

    path = case.input
    start = time.perf_counter()
    segmenter = models.get(2 if image.is_2d else 3)
    bundle = segmenter.bundle
    reporter.model(bundle.id, bundle.version, bundle.task, bundle.dimension)
    reporter.event(
        "start",
        input=str(path),
        frame=frame,
        model_id=bundle.id,
        model_sha256=bundle.fingerprint,
        device=str(segmenter.device),
    )
    result = segmenter.segment(image, request.inference_options(), progress=reporter.progress, source=str(path))
    for flag in spacing_flags(choice):
        _add_flag(result, flag)
    if image.is_2d and bundle.task is not Task.INTRAPARTUM and _implausible(result):
        _add_flag(
            result, Flag("model_mismatch_possible", f"the head is implausible for a standard plane; {INTRAPARTUM_HINT}")
        )
    for flag in result.flags:  # the other flags are detail in the JSON; the review decision speaks for them
        if flag.code in ALWAYS_WARN:
            reporter.event("warning", input=str(path), code=flag.code, message=flag.message)
    if result.review is not None:
        reporter.event(
            "review", input=str(path), frame=frame, recommended=result.review.recommended, reasons=result.review.reasons
        )
    record = case_record(result, image, str(path), choice) | extra
    outputs = write_outputs(
        result,
        image,
        case.directory,
        case.stem,
        request.label_format,
        qc=request.qc,
        spacing=choice,
        record=record,
    )
    seconds = round(time.perf_counter() - start, 2)
    reporter.event(
        "result",
        input=str(path),
        frame=frame,
        outputs={kind: str(value) for kind, value in outputs.items()},
        seconds=seconds,
        version=__version__,
    )
    return summary_row(record) | {"seconds": seconds, "outputs": str(case.directory)}


def _add_flag(result: Segmentation, flag: Flag) -> None:
    result.flags.append(flag)
    if result.biometry is not None:
        result.biometry = result.biometry.with_flags([flag])


def _implausible(result: Segmentation) -> bool:
    """True when the standard-plane model measured a head no fetus has (outside ``PLAUSIBLE_HC_MM``)."""
    from FetalHeadSegLib.measure.quality import PLAUSIBLE_HC_MM

    low, high = PLAUSIBLE_HC_MM
    return result.biometry is not None and not low <= result.biometry.hc_mm <= high


def _spacing_table(path: Path | None) -> dict[str, float]:
    if path is None:
        return {}
    from FetalHeadSegLib.measure.hc18 import read_pixel_size_csv

    return {name: row.pixel_size_mm for name, row in read_pixel_size_csv(path).items()}
